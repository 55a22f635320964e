"""The SwiGLU feed-forward network of Llama and the rule that sets its hidden size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import require_float


def ffn_hidden_dim(dim: int, multiple_of: int, ffn_dim_multiplier: float | None = None) -> int:
    """Hidden size of Llama's SwiGLU: 2/3 of 4*dim, times an optional multiplier, rounded up."""
    if dim <= 0 or multiple_of <= 0:
        raise ValueError(
            f"dim and multiple_of must be positive, got dim={dim}, multiple_of={multiple_of}."
        )
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        if ffn_dim_multiplier <= 0:
            raise ValueError(f"ffn_dim_multiplier must be positive, got {ffn_dim_multiplier}.")
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def swiglu(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
    """w2(silu(w1 x) * w3 x), with weights in nn.Linear layout (out_features, in_features)."""
    for name, t in (("x", x), ("w1", w1), ("w2", w2), ("w3", w3)):
        require_float("swiglu", name, t)
    dim = x.shape[-1]
    if w1.shape != w3.shape or w1.shape[1] != dim or w2.shape != (dim, w1.shape[0]):
        raise ValueError(
            f"swiglu: shapes do not fit. x ends in {dim}; w1 {tuple(w1.shape)} and w3 "
            f"{tuple(w3.shape)} must both be (hidden, {dim}); w2 {tuple(w2.shape)} must be "
            f"({dim}, hidden)."
        )
    return F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)


class FeedForward(nn.Module):
    """Llama's feed-forward block: a gated SiLU (SwiGLU) with three bias-free matrices."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)  # gate
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)  # down
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)  # up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply w2(silu(w1 x) * w3 x)."""
        require_float("FeedForward", "x", x)
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MLPFeedForward(nn.Module):
    """The two-matrix feed-forward of the original Transformer and GPT: w2(act(w1 x)).

    Kept for the ablation lab: with a hidden layer 3/2 as wide as SwiGLU's it has the same
    number of parameters (2 * 3/2 = 3 matrices' worth).
    """

    def __init__(self, dim: int, hidden_dim: int, activation: str = "gelu") -> None:
        super().__init__()
        if activation not in ("relu", "gelu"):
            raise ValueError(
                f"MLPFeedForward: activation must be 'relu' or 'gelu', got {activation!r}."
            )
        self.activation = activation
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)  # up
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply w2(act(w1 x)) with act = ReLU or GELU."""
        require_float("MLPFeedForward", "x", x)
        act = F.relu if self.activation == "relu" else F.gelu
        return self.w2(act(self.w1(x)))
