"""Exercise checks: `checks.<name>(your_function)` tests your solution and names likely mistakes.

Each check runs your function against the reference implementation and against properties on
several inputs. It prints one line when everything passes, raises `CheckFailed` (an
`AssertionError`) with a hint when something is wrong, and says "not implemented yet" when your
function still raises `NotImplementedError`.
"""

from ._core import CheckFailed, CheckResult, reset_results, results
from .attention import softmax

__all__ = ["CheckFailed", "CheckResult", "reset_results", "results", "softmax"]


def available() -> list[str]:
    """Return the names of all exercise checks, sorted."""
    return sorted(name for name, obj in globals().items() if getattr(obj, "is_check", False))
