"""Checks for the attention chapter's building blocks (softmax first)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._core import call, check, close, expect_tensor, fail


@check
def softmax(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(x: Tensor, dim: int = -1) -> Tensor` against torch.softmax and its properties."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, generator=gen)

    out = expect_tensor(call(fn, x), x.shape)
    _compare(out, x, dim=-1)

    cube = torch.randn(4, 3, 6, generator=gen)
    for dim in (0, 1, 2, -1):
        _compare(expect_tensor(call(fn, cube, dim=dim), cube.shape), cube, dim=dim)

    big = torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, -1000.0, -999.0]])
    out = expect_tensor(call(fn, big), big.shape)
    if not torch.isfinite(out).all():
        fail(
            "large scores give inf or nan: exp(1000) overflows float32. Subtract the maximum "
            "along `dim` before exponentiating; softmax(x) equals softmax(x - c) for any c."
        )
    _compare(out, big, dim=-1)

    equal = torch.full((1, 6), 2.5)
    out = expect_tensor(call(fn, equal), equal.shape)
    if not close(out, torch.full((1, 6), 1 / 6)):
        fail(f"six equal scores should give 1/6 = 0.1667 each, not {out[0, 0].item():.4f}.")
    return "equals torch.softmax on 4 inputs and every dim; no overflow; equal scores give 1/n"


def _compare(out: torch.Tensor, x: torch.Tensor, dim: int) -> None:
    """Fail, naming the likely mistake, unless `out` equals softmax(x) along `dim`."""
    if close(out, torch.softmax(x, dim=dim)):
        return
    last = x.dim() - 1
    for other in range(x.dim()):
        if other != dim % x.dim() and close(out, torch.softmax(x, dim=other)):
            ignored = " (the last axis: is `dim` ignored?)" if other == last else ""
            fail(
                f"with dim={dim} your function normalised over dim {other}{ignored} instead. "
                "Use the `dim` argument in both the max/exp step and the sum, and keep the "
                "reduced axis (keepdim=True) so broadcasting lines up."
            )
    if not torch.isfinite(out).all():
        fail("the result contains inf or nan. Subtract the maximum along `dim` before exp.")
    if (out < 0).any():
        fail("the result has negative entries, but probabilities are never negative. Use exp.")
    shifted = torch.exp(x - x.amax(dim=dim, keepdim=True))
    if close(out, shifted) or close(out, torch.exp(x)):
        fail(
            "the values are exponentials that do not sum to 1 along `dim`: the normalisation "
            "is missing. Divide by their sum along `dim` (keepdim=True)."
        )
    sums = out.sum(dim=dim)
    if not close(sums, torch.ones_like(sums), atol=1e-4):
        fail(
            f"the result does not sum to 1 along dim={dim} (sums range from "
            f"{sums.min().item():.4f} to {sums.max().item():.4f}). Divide exp(x - max) by its "
            "sum along the same `dim`."
        )
    fail(
        "the result sums to 1 but differs from softmax. Check that you exponentiate "
        "x - max (not x / max, and not the max alone)."
    )
