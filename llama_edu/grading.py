"""The grader's checking process: reference checks run on handed-in functions, away from the kernel.

`llama_edu.classroom.grade_notebook` runs a submission in a Jupyter kernel and, after each exercise
cell, has the kernel write the function handed to `checks.X(...)` to a file with cloudpickle. It
then starts this module in a fresh Python process (`python -c "...; run_checks()"`), which

1. reads a per-run secret and the list of files from stdin (the kernel never sees the secret);
2. points its own stdout at stderr, so whatever a handed-in function prints is never a verdict;
3. imports the checks and keeps private references to their bodies before unpickling anything;
4. per exercise: replaces the library functions the exercise asks the learner to write with
   stand-ins that refuse calls coming from the handed-in code, unpickles the candidate, refuses
   it if it is not code defined in the notebook, runs the check body on it, and writes one
   verdict line that starts with the secret.

Nothing printed in the kernel can award a pass: only a verdict line from this process can.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import pickle
import pkgutil
import sys
import sysconfig
import types
from collections.abc import Callable
from typing import Any

PASSED, FAILED, NOT_ATTEMPTED = "passed", "failed", "not attempted"

# Library functions besides `llama_edu.*.<check name>` that an exercise asks the learner to write.
EXTRA_FORBIDDEN = {
    "softmax": [
        ("torch", "softmax"),
        ("torch.nn.functional", "softmax"),
        ("torch.special", "softmax"),
        ("torch.Tensor", "softmax"),
    ],
}


class LibraryCallRefused(RuntimeError):
    """A handed-in function called the library function that the exercise asks it to replace."""


def _trusted(frame: types.FrameType) -> bool:
    """True when the frame runs code of an imported module (not code unpickled from the kernel)."""
    module = sys.modules.get(frame.f_globals.get("__name__", ""))
    return module is not None and getattr(module, "__dict__", None) is frame.f_globals


def _called_by_candidate(frame: types.FrameType | None) -> bool:
    """Walk outwards: True if handed-in code is met before the code of a check."""
    while frame is not None:
        if not _trusted(frame):
            return True
        if frame.f_globals.get("__name__", "").startswith("llama_edu.checks"):
            return False
        frame = frame.f_back
    return False


def _stand_in(original: Callable[..., Any], label: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def refusing(*args: Any, **kwargs: Any) -> Any:
        if _called_by_candidate(sys._getframe(1)):
            raise LibraryCallRefused(
                f"you called the library's {label}, which is what this exercise asks you to "
                "write. Compute the result yourself (with basic torch operations)."
            )
        return original(*args, **kwargs)

    return refusing


def _forbidden(check: str) -> list[tuple[object, str, Any, str]]:
    """(owner, attribute, original, label) for each library function exercise `check` replaces."""
    found: list[tuple[object, str, Any, str]] = []
    originals = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("llama_edu.") or name.startswith("llama_edu.checks"):
            continue
        value = getattr(module, check, None)
        if callable(value) and getattr(value, "__module__", None) == name:
            originals.append(value)
    for owner_name, attribute in EXTRA_FORBIDDEN.get(check, []):
        owner_module, _, owner_attr = owner_name.rpartition(".")
        owner = sys.modules.get(owner_name)
        if owner is None and owner_module in sys.modules:  # a class such as torch.Tensor
            owner = getattr(sys.modules[owner_module], owner_attr, None)
        if owner is not None and hasattr(owner, attribute):
            found.append((owner, attribute, getattr(owner, attribute), f"{owner_name}.{attribute}"))
    for original in originals:
        # The function and every re-export of it inside the library (from .norm import rms_norm).
        for name, module in list(sys.modules.items()):
            if name.startswith("llama_edu") and not name.startswith("llama_edu.checks"):
                for attribute, value in list(vars(module).items()):
                    if value is original:
                        label = f"{original.__module__}.{original.__qualname__}"
                        found.append((module, attribute, original, label))
    return found


def _library_dirs() -> list[str]:
    import torch

    import llama_edu

    paths = {os.path.dirname(llama_edu.__file__), os.path.dirname(torch.__file__)}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        if sysconfig.get_paths().get(key):
            paths.add(sysconfig.get_paths()[key])
    return [os.path.realpath(p) + os.sep for p in paths]


def _code_files(obj: Any) -> list[str]:
    """The file names of all code objects of a function or class (nested functions included)."""
    codes: list[types.CodeType] = []
    if isinstance(obj, types.FunctionType):
        codes.append(obj.__code__)
    elif isinstance(obj, type):
        for value in vars(obj).values():
            value = getattr(value, "__func__", value)  # staticmethod, classmethod
            if isinstance(value, types.FunctionType):
                codes.append(value.__code__)
    files = []
    while codes:
        code = codes.pop()
        files.append(code.co_filename)
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return files


def _fingerprint(code: types.CodeType) -> tuple:
    """What identifies a function's code whatever file name it carries (cloudpickle >= 3 writes
    `<dynamic-code>` there): its name, bytecode, names, local names and constants."""
    consts = tuple(c for c in code.co_consts if not isinstance(c, types.CodeType))
    return (code.co_name, code.co_code, code.co_names, code.co_varnames, repr(consts))


def _library_code() -> dict[tuple, str]:
    """Fingerprint -> qualified name of every Python function and method of llama_edu and of
    torch's Python-level modules (torch.nn, torch.functional, Tensor)."""
    import llama_edu

    for info in pkgutil.walk_packages(llama_edu.__path__, "llama_edu."):
        if info.name.split(".")[-1] not in _NOT_SCANNED:
            try:
                importlib.import_module(info.name)
            except (
                Exception
            ):  # an optional dependency is missing: its functions cannot be handed in
                continue
    found: dict[tuple, str] = {}
    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith(_LIBRARY_MODULES):
            continue
        for value in list(vars(module).values()):
            functions = [value]
            if isinstance(value, type) and value.__module__ == module_name:
                functions = [getattr(v, "__func__", v) for v in vars(value).values()]
            for function in functions:
                if isinstance(function, types.FunctionType):
                    label = f"{function.__module__}.{function.__qualname__}"
                    found.setdefault(_fingerprint(function.__code__), label)
    return found


_LIBRARY_CODE: dict[tuple, str] | None = None
_NOT_SCANNED = ("__main__", "cli", "classroom", "grading", "nbgrader_cells")
"""Modules with nothing an exercise asks for (and slow imports): not imported to be scanned."""
_LIBRARY_MODULES = ("llama_edu", "torch.nn", "torch.functional", "torch._tensor")
"""Where a handed-in function's code may not come from (torch's Python-level functions and
modules live in these; the rest of torch is compiled code, refused by its module name)."""


def _load_library_code() -> None:
    """Fingerprint the library once per process (before any candidate is checked)."""
    global _LIBRARY_CODE
    if _LIBRARY_CODE is None:
        _LIBRARY_CODE = _library_code()


def _library_twin(obj: Any) -> str | None:
    """The library function or class whose code `obj` carries, or None."""
    _load_library_code()
    assert _LIBRARY_CODE is not None
    if isinstance(obj, types.FunctionType):
        return _LIBRARY_CODE.get(_fingerprint(obj.__code__))
    methods = [getattr(v, "__func__", v) for v in vars(obj).values()]
    methods = [m for m in methods if isinstance(m, types.FunctionType)]
    twins = [_LIBRARY_CODE.get(_fingerprint(m.__code__)) for m in methods]
    if methods and all(twins):  # every method is a library method: a relabelled library class
        return twins[0].rsplit(".", 1)[0]
    return None


def foreign(obj: Any, library_dirs: list[str]) -> str | None:
    """Why `obj` is not the learner's own function or class, or None when it is."""
    while isinstance(obj, (types.MethodType, functools.partial)):
        obj = obj.__func__ if isinstance(obj, types.MethodType) else obj.func
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)[:60]
    module = getattr(obj, "__module__", None)
    if not isinstance(obj, (types.FunctionType, type)) or module != "__main__":
        where = f"from {module}" if module and module != "__main__" else "from a library"
        return (
            f"you handed in {name} {where}, not a function defined in your notebook; "
            "write your own and pass that to the check."
        )
    if isinstance(obj, type):
        for base in obj.__mro__[1:]:
            if base.__module__.split(".")[0] == "llama_edu":
                return (
                    f"your class {name} derives from {base.__module__}.{base.__qualname__}, so "
                    "the library's code does the work; derive from torch.nn.Module and write "
                    "the methods yourself."
                )
    for filename in _code_files(obj):
        real = os.path.realpath(filename)
        if any(real.startswith(d) for d in library_dirs):
            return (
                f"you handed in {name}, whose code comes from {filename} (a library), not from "
                "your notebook; write your own."
            )
    twin = _library_twin(obj)
    if twin:
        return (
            f"you handed in {name}, whose code is a library's ({twin}), not code written in "
            "your notebook; write your own."
        )
    return None


# The torch functions through which the checks compare results. (All of torch is not watched:
# torch replaces some of its own attributes on first use, torch.manual_seed for one.)
WATCHED_TORCH = {
    "torch": ["allclose", "isclose", "equal", "eq", "ne", "isfinite", "isnan", "all", "any", "abs"],
    "torch.Tensor": ["allclose", "isclose", "equal", "__eq__", "__ne__", "double", "abs", "all",
                     "any", "max", "item", "tolist"],
}  # fmt: skip


def _snapshot() -> list[tuple[str, Any, str, Any]]:
    """Every attribute of every llama_edu module, and torch's comparison functions, as they are."""
    import torch

    entries = []
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "llama_edu":
            entries += [(name, module, key, value) for key, value in list(vars(module).items())]
    for label, owner in (("torch", torch), ("torch.Tensor", torch.Tensor)):
        entries += [(label, owner, key, getattr(owner, key)) for key in WATCHED_TORCH[label]]
    return entries


def _undo_changes(snapshot: list[tuple[str, Any, str, Any]]) -> list[str]:
    """Put back every watched attribute that no longer is what it was; return their names."""
    changed = []
    for label, owner, name, value in snapshot:
        if getattr(owner, name, _snapshot) is not value:
            changed.append(f"{label}.{name}")
            setattr(owner, name, value)
    return changed


def judge(
    check: str, path: str, body: Callable[[Any], str], failure: type, library_dirs: list[str]
) -> dict[str, str]:
    """Unpickle one candidate and run a check body on it; return its verdict as a dict."""
    replaced = _forbidden(check)
    for owner, attribute, original, label in replaced:
        setattr(owner, attribute, _stand_in(original, label))
    snapshot = _snapshot()
    try:
        try:
            with open(path, "rb") as handle:
                candidate = pickle.load(handle)
        except Exception as exc:
            return _verdict(
                check, FAILED,
                f"your function could not be loaded by the grader ({type(exc).__name__}: "
                f"{str(exc)[:200]}). Define it, and everything it uses, in the notebook itself.",
            )  # fmt: skip
        reason = foreign(candidate, library_dirs)
        if reason:
            return _verdict(check, FAILED, reason)
        try:
            summary = body(candidate)
        except NotImplementedError:
            return _verdict(check, NOT_ATTEMPTED, "still raises NotImplementedError")
        except failure as exc:
            return _verdict(check, FAILED, str(exc))
        except BaseException as exc:  # a function the check did not expect to crash, or exit()
            return _verdict(
                check, FAILED,
                f"checking your function raised {type(exc).__name__}: {str(exc)[:300]}",
            )  # fmt: skip
        changed = _undo_changes(snapshot)
        if changed:
            return _verdict(
                check, FAILED,
                f"while it was checked, your function changed {', '.join(changed[:3])}, which the "
                "check relies on. Compute the answer without changing torch or llama_edu.",
            )  # fmt: skip
        return _verdict(check, PASSED, str(summary))
    finally:
        _undo_changes(snapshot)
        for owner, attribute, original, _ in reversed(replaced):
            setattr(owner, attribute, original)


def _verdict(check: str, status: str, message: str) -> dict[str, str]:
    from .messages import translate  # Chinese verdicts when LLAMA_EDU_LANG=zh

    return {"check": check, "status": status, "message": translate(message)}


def run_checks() -> None:
    """Entry point of the checking process: secret and jobs on stdin, verdict lines on stdout."""
    secret = sys.stdin.readline().strip()
    jobs = json.loads(sys.stdin.readline())
    verdicts = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # what the candidates print goes to stderr, which the grader does not read
    sys.stdout = sys.stderr

    from llama_edu import checks
    from llama_edu.checks import _core

    bodies = {name: getattr(checks, name).__wrapped__ for name in checks.available()}
    failure = _core._Failure
    library_dirs = _library_dirs()
    _load_library_code()  # before the snapshots, which watch this module's attributes too
    for job in jobs:
        check = job["check"]
        if check not in bodies:
            verdict = _verdict(check, FAILED, f"there is no check named {check} in llama_edu")
        else:
            verdict = judge(check, job["path"], bodies[check], failure, library_dirs)
        verdicts.write(f"{secret}\t{json.dumps(verdict)}\n")
        verdicts.flush()
