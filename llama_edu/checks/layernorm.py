"""Checks for the normalisation chapter: LayerNorm, the norm that RMSNorm simplifies."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .. import norm as ref
from ._core import Mistake, call, check, fail, match_mistakes

_HINT = (
    "LayerNorm is (x - mean) / sqrt(var + eps) * weight + bias, with the mean and the variance "
    "taken over the last axis (dim=-1, keepdim=True) and var = mean((x - mean)**2)."
)


@check
def layer_norm(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(x, weight, bias, eps) -> Tensor` against LayerNorm over the last axis."""
    gen = torch.Generator().manual_seed(0)
    cases = [
        ("x of shape (2, 3, 8)", torch.randn(2, 3, 8, generator=gen) + 2.0, 1e-5),
        ("tiny values (about 0.001)", torch.randn(4, 16, generator=gen) * 1e-3, 1e-5),
        ("x of shape (2, 5, 3, 6)", torch.randn(2, 5, 3, 6, generator=gen) * 4 - 3, 1e-6),
        ("eps = 0.1", torch.randn(3, 7, generator=gen) * 0.3, 0.1),
    ]
    for label, x, eps in cases:
        weight = torch.rand(x.shape[-1], generator=gen) + 0.5
        bias = torch.randn(x.shape[-1], generator=gen)
        out = _run(fn, x, weight, bias, eps)
        _match(out, ref.layer_norm(x, weight, bias, eps), _mistakes(x, weight, bias, eps), label)
    return (
        "equals the reference on 4 inputs (batch > 1, a non-zero mean, tiny values, several "
        "eps); mean and variance over the last axis; weight and bias applied"
    )


def _run(
    fn: Callable[..., torch.Tensor],
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """Call the candidate on copies, then check the type, dtype and that inputs were not changed."""
    inputs = (x, weight, bias)
    copies = tuple(t.clone() for t in inputs)
    try:
        out = call(fn, *copies, eps)
    except NotImplementedError:
        raise
    except Exception as failure:  # call() already described the crash
        fail(f"{failure}\n{_HINT}")
    if any(not torch.equal(a, b) for a, b in zip(copies, inputs, strict=True)):
        fail(
            "your function changed x, weight or bias in place (e.g. with x.sub_() or -=). "
            "Compute a new tensor instead and leave the inputs as they are."
        )
    if not isinstance(out, torch.Tensor):
        fail(f"the result should be a torch.Tensor, but it is {type(out).__name__}.")
    if out.dtype != x.dtype:
        fail(
            f"the result has dtype {str(out.dtype)[6:]}; it should keep the dtype of x "
            f"({str(x.dtype)[6:]})."
        )
    return out


def _mistakes(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> list[Mistake]:
    """Typical wrong versions of LayerNorm on these inputs, each with the hint that names it."""
    x64, w, b = x.double(), weight.double(), bias.double()
    mean = x64.mean(dim=-1, keepdim=True)
    centred = x64 - mean
    var = centred.pow(2).mean(dim=-1, keepdim=True)
    normed = centred * torch.rsqrt(var + eps)
    mistakes = [
        (
            ref.rms_norm(x64, w, eps) + b,
            "you did not subtract the mean: that is RMSNorm (Llama's norm). LayerNorm first "
            "centres x: x - x.mean(dim=-1, keepdim=True), then divides by the standard "
            "deviation.",
        ),
        (
            centred * torch.rsqrt(x64.var(dim=-1, keepdim=True) + eps) * w + b,
            "the variance divides by n - 1 (torch.var's default, unbiased=True). LayerNorm "
            "uses the plain mean of the squared deviations, which divides by n: use "
            "x.var(dim=-1, keepdim=True, unbiased=False), or centred.pow(2).mean(...).",
        ),
        (
            centred / (var.sqrt() + eps) * w + b,
            "eps is added outside the square root: (x - mean) / (sqrt(var) + eps). Put it "
            "inside: (x - mean) / sqrt(var + eps).",
        ),
        (
            centred / var.sqrt() * w + b,
            "eps is missing: with tiny inputs the result is different. Divide by sqrt(var + eps).",
        ),
        (
            centred * torch.rsqrt(x64.pow(2).mean(dim=-1, keepdim=True) + eps) * w + b,
            "you divided by the root mean square of x, not by its standard deviation. The "
            "variance is the mean of the squared centred values: (x - mean)**2.",
        ),
        (
            centred / (var + eps) * w + b,
            "the square root is missing: divide by sqrt(var + eps), the standard deviation, "
            "not by var + eps.",
        ),
        (
            normed + b,
            "the weight is missing: multiply the normalised x by `weight` (one gain per "
            "feature), then add `bias`.",
        ),
        (
            normed * w,
            "the bias is missing: add `bias` after multiplying by `weight`.",
        ),
        (
            normed,
            "the weight and the bias are missing: return normalised * weight + bias.",
        ),
        (
            (normed + b) * w,
            "the bias is added before the weight. LayerNorm computes normalised * weight + bias.",
        ),
    ]
    for axis in range(x.dim() - 1):
        m = x64.mean(dim=axis, keepdim=True)
        v = (x64 - m).pow(2).mean(dim=axis, keepdim=True)
        mistakes.append(
            (
                (x64 - m) * torch.rsqrt(v + eps) * w + b,
                f"the mean and variance are taken over axis {axis}, not the last axis. Each "
                "position is normalised over its own features: dim=-1, keepdim=True.",
            )
        )
    whole = (x64 - x64.mean()) * torch.rsqrt(x64.var(unbiased=False) + eps) * w + b
    mistakes.append(
        (
            whole,
            "the mean and variance are taken over all values of x at once. Each position is "
            "normalised over its own features: dim=-1, keepdim=True.",
        )
    )
    for fixed in (1e-5, 1e-6, 1e-8):
        if fixed != eps:
            mistakes.append(
                (
                    ref.layer_norm(x64, w, b, fixed),
                    f"the `eps` argument is ignored (your result fits eps={fixed:g}, but "
                    f"eps={eps:g} was passed). Use the eps you are given.",
                )
            )
    return mistakes


def _match(
    out: torch.Tensor,
    expected: torch.Tensor,
    mistakes: Sequence[Mistake],
    label: str,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> None:
    """Compare with LayerNorm, naming a known mistake if the output matches one."""
    match_mistakes(out, expected, mistakes, label, _HINT, "LayerNorm", atol, rtol)
