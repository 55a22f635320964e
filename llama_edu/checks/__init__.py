"""Exercise checks: `checks.<name>(your_function)` tests your solution and names likely mistakes.

Each check runs your function against the reference implementation and against properties on
several inputs. It prints one line when everything passes, raises `CheckFailed` (an
`AssertionError`) with a hint when something is wrong, and says "not implemented yet" when your
function still raises `NotImplementedError`.

Checks live in one module per topic in this package (attention.py, norm.py, ...). Every function
decorated with `@check` in any of them is collected here, so it is reachable as `checks.<name>`.
"""

import importlib
import pkgutil

from ._core import CheckFailed, CheckResult, choose, require, reset_results, results

HELPERS = ("available", "choose", "require", "reset_results", "results")
"""Functions of `checks` that are not exercise checks (`checks.require(...)` grades nothing)."""


def _collect() -> list[str]:
    names = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, obj in vars(module).items():
            if getattr(obj, "is_check", False) and obj.__module__ == module.__name__:
                # The submodule itself may sit under the same name (checks.attention): the
                # check replaces it; only a second check of that name is an error.
                if getattr(globals().get(name), "is_check", False):
                    raise ImportError(f"two exercise checks are named {name!r}; rename one.")
                if name in HELPERS:
                    raise ImportError(
                        f"the exercise check {name!r} would hide checks.{name}, a helper that "
                        "notebooks call; rename the check."
                    )
                globals()[name] = obj
                names.append(name)
    return names


_CHECKS = _collect()
__all__ = [
    "CheckFailed",
    "CheckResult",
    "choose",
    "require",
    "reset_results",
    "results",
    "available",
    *_CHECKS,
]


def available() -> list[str]:
    """Return the names of all exercise checks, sorted."""
    return sorted(_CHECKS)
