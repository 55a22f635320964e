"""Normalisation layers: Llama's RMSNorm, and LayerNorm for comparison."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import require_float


def _check_norm_args(
    fn: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float
) -> None:
    require_float(fn, "x", x)
    for name, param in (("weight", weight), ("bias", bias)):
        if param is None:
            continue
        require_float(fn, name, param)
        if param.shape != x.shape[-1:]:
            raise ValueError(
                f"{fn}: {name} has shape {tuple(param.shape)} but x has shape {tuple(x.shape)}; "
                f"the {name} must have one entry per feature, shape ({x.shape[-1]},)."
            )
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < math.inf:
        raise ValueError(
            f"{fn}: eps must be a finite number >= 0 (it keeps the division away from 0; "
            f"Llama uses 1e-5 or 1e-6), got {eps!r}."
        )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """RMSNorm over the last axis, computed in float32 and cast back to x's dtype, then scaled."""
    fine = (  # the common case, decided cheaply; _check_norm_args explains anything else
        isinstance(x, torch.Tensor)
        and isinstance(weight, torch.Tensor)
        and x.is_floating_point()
        and weight.is_floating_point()
        and weight.shape == x.shape[-1:]
        and isinstance(eps, float)
        and 0.0 <= eps < math.inf
    )
    if not fine:
        _check_norm_args("rms_norm", x, weight, None, eps)
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)
    return normed.type_as(x) * weight


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """LayerNorm over the last axis (subtract the mean, divide by the std), for comparison."""
    _check_norm_args("layer_norm", x, weight, bias, eps)
    x32 = x.float()
    centred = x32 - x32.mean(dim=-1, keepdim=True)
    normed = centred * torch.rsqrt(centred.pow(2).mean(dim=-1, keepdim=True) + eps)
    out = normed.type_as(x) * weight
    return out + bias if bias is not None else out


class RMSNorm(nn.Module):
    """Root-mean-square normalisation with a learned per-feature gain (no bias, no centring)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise x over its last axis."""
        if (
            x.dtype == self.weight.dtype == torch.float32
            and not torch.is_grad_enabled()
            and isinstance(self.eps, float)
            and 0.0 <= self.eps < math.inf
        ):
            # PyTorch's fused kernel gives the same bits in float32 and saves about ten small
            # operations, which counts when generating one token at a time (its backward is
            # slower than this file's, so training keeps rms_norm)
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        return rms_norm(x, self.weight, self.eps)


class LayerNorm(nn.Module):
    """Classic LayerNorm (the original Transformer's), kept for comparison with RMSNorm."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise x over its last axis."""
        return layer_norm(x, self.weight, self.bias, self.eps)
