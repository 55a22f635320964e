"""Small input checks shared by the model's building blocks (cheap: no data is read)."""

from __future__ import annotations

import math
import operator
from typing import Any

import torch


def require_tensor(fn: str, name: str, value: Any) -> torch.Tensor:
    """Raise TypeError unless `value` is a torch.Tensor; return it."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{fn} expects {name} to be a torch.Tensor, got {type(value).__name__}; "
            f"make one with torch.tensor({name})."
        )
    return value


def require_float(fn: str, name: str, value: Any) -> torch.Tensor:
    """Raise TypeError unless `value` is a floating-point tensor; return it."""
    require_tensor(fn, name, value)
    if not value.is_floating_point():
        raise TypeError(
            f"{fn} expects a floating-point tensor, got {value.dtype}; convert with {name}.float()."
        )
    return value


def is_number(value: Any) -> bool:
    """Whether `value` is a real number (int or float, also NumPy's), but not a bool or str."""
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, torch.Tensor) or value.numel() == 1


def as_int(value: Any) -> int | None:
    """`value` as an int if it is one (also NumPy's or a 0-d integer tensor), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def require_positive_int(fn: str, name: str, value: Any) -> int:
    """Raise ValueError unless `value` is an int >= 1 (bools are refused); return it."""
    number = as_int(value)
    if number is None or number < 1:
        raise ValueError(f"{fn}: {name} must be a positive int, got {value!r}.")
    return number


def require_finite(fn: str, name: str, value: Any, low: float, strict: bool) -> float:
    """Raise ValueError unless `value` is a finite number > low (strict) or >= low."""
    ok = is_number(value) and math.isfinite(float(value))
    ok = ok and (float(value) > low if strict else float(value) >= low)
    if not ok:
        relation = ">" if strict else ">="
        raise ValueError(f"{fn}: {name} must be a finite number {relation} {low:g}, got {value!r}.")
    return float(value)
