"""The machinery behind every exercise check: run, diagnose, report."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..messages import translate

PASSED, FAILED, NOT_IMPLEMENTED = "passed", "failed", "not implemented"


@dataclass
class CheckResult:
    """The latest outcome of one check in this kernel."""

    name: str
    status: str
    message: str


_RESULTS: dict[str, CheckResult] = {}


def results() -> dict[str, CheckResult]:
    """Return the latest result of every check run in this Python session, by check name."""
    return dict(_RESULTS)


def choose(name: str, yours: Any, library: Any, label: str = "") -> Any:
    """Return `yours` when `checks.<name>` passed in this session, else `library`; say which.

    The notebook goes on with the learner's own implementation once its check has passed, and
    with the library's until then, so a student version runs to the end with exercises not done.
    """
    what = label or name
    result = _RESULTS.get(name)
    if result is not None and result.status == PASSED:
        print(translate(f"Using your {what} (checks.{name} passed)."))
        return yours
    state = "has not run" if result is None else f"is {result.status}"
    print(translate(f"Using the library's {what}: checks.{name} {state}."))
    return library


def require(*names: str) -> None:
    """Raise AssertionError unless the latest result of each named check is 'passed'.

    nbgrader's hidden test cells call this right after an exercise cell, so the exercise scores
    its points only when its check passed in this kernel. It prints nothing on success.
    """
    if not names:
        raise TypeError(
            translate("checks.require needs the name of at least one check, e.g. 'softmax'.")
        )
    for name in names:
        result = _RESULTS.get(name)
        if result is None:
            raise AssertionError(translate(
                f"exercise {name} is not done: checks.{name} has not run in this kernel. Run the "
                f"exercise cell that calls checks.{name}(...) (and every cell above it) first."
            ))
        if result.status == NOT_IMPLEMENTED:
            raise AssertionError(translate(
                f"exercise {name} is not done: your function still raises NotImplementedError. "
                f"Write your solution in the exercise cell and run that cell again."
            ))
        if result.status != PASSED:
            raise AssertionError(translate(
                f"exercise {name} is not done: checks.{name} failed: {result.message.rstrip('.')}. "
                "Fix your solution in the exercise cell and run that cell again."
            ))


def reset_results() -> None:
    """Forget all recorded results (used by the grader between notebooks)."""
    _RESULTS.clear()


class CheckFailed(AssertionError):
    """An exercise solution gave a wrong answer; the message names the likely mistake."""

    def __init__(self, check: str, message: str) -> None:
        message = translate(message)
        super().__init__(f"checks.{check}: {message}")
        self.check = check
        self.hint = message

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a long stack of check internals.
        return [translate(f"\u2717 checks.{self.check} failed"), "", self.hint]


class _Failure(Exception):
    """Raised inside a check body; the wrapper turns it into CheckFailed."""


def fail(message: str) -> None:
    """Stop the running check with a message that names the likely mistake."""
    raise _Failure(message)


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the candidate; report its own exceptions (except NotImplementedError) as a failure."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise
    except Exception as exc:  # the student's code crashed: say how it was called
        described = ", ".join(
            [_describe(a) for a in args] + [f"{k}={_describe(v)}" for k, v in kwargs.items()]
        )
        raise _Failure(
            f"your function raised {type(exc).__name__}: {exc}\n"
            f"It was called as fn({described})."
        ) from exc


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def expect_tensor(out: Any, shape: tuple[int, ...], what: str = "the result") -> torch.Tensor:
    """Fail unless `out` is a tensor of the given shape."""
    if not isinstance(out, torch.Tensor):
        fail(f"{what} should be a torch.Tensor, but it is {type(out).__name__}.")
    if tuple(out.shape) != tuple(shape):
        fail(f"{what} has shape {tuple(out.shape)}; expected {tuple(shape)}.")
    return out


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """True when two tensors have equal shapes and equal values within tolerance (NaN never)."""
    if a.shape != b.shape:
        return False
    return bool(torch.allclose(a.double(), b.double(), atol=atol, rtol=rtol))


def check(body: Callable[[Callable[..., Any]], str]) -> Callable[[Callable[..., Any]], None]:
    """Turn a check body (which returns a one-line summary) into a public exercise check."""
    name = body.__name__

    @functools.wraps(body)
    def run(candidate: Callable[..., Any]) -> None:
        if not callable(candidate):
            raise TypeError(translate(
                f"checks.{name} expects your function itself, e.g. checks.{name}(my_{name}); "
                f"got {type(candidate).__name__}. Pass the function without calling it."
            ))
        try:
            summary = body(candidate)
        except NotImplementedError:
            message = (
                "not implemented yet. Replace the `raise NotImplementedError(...)` line "
                "with your solution, run the cell again, and the check will run."
            )
            _RESULTS[name] = CheckResult(name, NOT_IMPLEMENTED, translate(message))
            print(translate(f"\u2026 checks.{name}: {message}"))
            return
        except _Failure as failure:
            _RESULTS[name] = CheckResult(name, FAILED, translate(str(failure)))
            raise CheckFailed(name, str(failure)) from None
        _RESULTS[name] = CheckResult(name, PASSED, translate(summary))
        print(translate(f"\u2713 checks.{name} passed: {summary}"))

    run.is_check = True  # type: ignore[attr-defined]
    return run


Mistake = tuple[torch.Tensor, str]
"""What a typical wrong solution returns on an input, and the message that names the mistake."""


def match_mistakes(
    out: Any,
    expected: torch.Tensor,
    mistakes: Sequence[Mistake],
    label: str,
    otherwise: str = "",
    what: str = "the reference",
    atol: float = 1e-5,
    rtol: float = 1e-4,
    mistake_atol: float | None = None,
) -> None:
    """Fail, naming the mistake whose output `out` equals, unless `out` equals `expected`.

    `mistake_atol` loosens only the search among mistakes (the answer itself is held to atol).
    """
    if not isinstance(out, torch.Tensor):
        fail(f"the result should be a torch.Tensor, but it is {type(out).__name__}.")
    if close(out, expected, atol, rtol):
        return
    loose = atol if mistake_atol is None else mistake_atol
    for wrong, message in mistakes:
        if close(out, wrong, loose, rtol):
            fail(f"with {label}: {message}")
    if out.shape != expected.shape:
        fail(
            f"with {label} the result has shape {tuple(out.shape)}; expected "
            f"{tuple(expected.shape)}. {otherwise}".rstrip()
        )
    if not torch.isfinite(out).all():
        fail(f"with {label} the result contains inf or nan. {otherwise}".rstrip())
    diff = (out.double() - expected.double()).abs()
    where = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
    fail(
        f"with {label} the result differs from {what} by up to {diff.max().item():.3g} "
        f"(at index {where}). {otherwise}".rstrip()
    )
