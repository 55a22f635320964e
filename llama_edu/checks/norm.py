"""Checks for the normalisation chapter: Llama's RMSNorm."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .. import norm as ref
from ._core import Mistake, call, check, close, fail, match_mistakes

_HINT = (
    "RMSNorm is x / sqrt(mean(x**2 over the last axis) + eps) * weight; keep the reduced axis "
    "(mean(dim=-1, keepdim=True)) so it broadcasts against x."
)


@check
def rms_norm(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(x: Tensor, weight: Tensor, eps: float) -> Tensor` against the reference RMSNorm."""
    gen = torch.Generator().manual_seed(0)
    cases = [
        ("x of shape (2, 3, 8)", torch.randn(2, 3, 8, generator=gen), 1e-5),
        ("tiny values (about 0.001)", torch.randn(4, 16, generator=gen) * 1e-3, 1e-5),
        ("x of shape (2, 5, 3, 6)", torch.randn(2, 5, 3, 6, generator=gen) * 4, 1e-6),
        ("eps = 0.1", torch.randn(3, 7, generator=gen) * 0.3, 0.1),
    ]
    for label, x, eps in cases:
        weight = torch.rand(x.shape[-1], generator=gen) + 0.5
        out = _run(fn, x, weight, eps, label)
        _match(out, ref.rms_norm(x, weight, eps), _mistakes(x, weight, eps), label)

    for dtype in (torch.float16, torch.bfloat16):
        x = (torch.randn(2, 5, 16, generator=gen) * 2).to(dtype)
        weight = (torch.rand(16, generator=gen) + 0.5).to(dtype)
        label = f"{_name(dtype)} input"
        out = _run(fn, x, weight, 1e-5, label)
        expected = ref.rms_norm(x, weight, 1e-5)
        _match(out, expected, _mistakes(x, weight, 1e-5), label, atol=2e-2, rtol=2e-2)

    # Squares of values above 256 overflow float16 (largest value 65504) unless upcast first.
    x = torch.randn(3, 8, generator=gen) * 50
    x[:, 0] = 400.0
    x, weight = x.half(), torch.ones(8, dtype=torch.float16)
    label = "float16 input with values up to 400"
    out = _run(fn, x, weight, 1e-5, label)
    expected = ref.rms_norm(x, weight, 1e-5)
    if not close(out, expected, atol=2e-2, rtol=2e-2):
        if not torch.isfinite(out).all() or (out == 0).all(dim=-1).any():
            fail(
                f"with {label} the result contains inf, nan or rows of zeros: 400**2 = 160000 is "
                "larger than float16 can hold (65504), so mean(x**2) overflows. Convert to "
                "float32 first (x.float()), normalise, then cast back with .type_as(x)."
            )
        _match(out, expected, _mistakes(x, weight, 1e-5), label, atol=2e-2, rtol=2e-2)
    return (
        "equals the reference on 7 inputs (batch > 1, tiny values, several eps, "
        "float16/bfloat16); keeps the input dtype; no float16 overflow"
    )


def _run(
    fn: Callable[..., torch.Tensor], x: torch.Tensor, weight: torch.Tensor, eps: float, label: str
) -> torch.Tensor:
    """Call the candidate on copies, then check the type, dtype and that inputs were not changed."""
    x_in, weight_in = x.clone(), weight.clone()
    try:
        out = call(fn, x_in, weight_in, eps)
    except NotImplementedError:
        raise
    except Exception as failure:  # call() already described the crash
        fail(f"{failure}\n{_HINT}")
    if not torch.equal(x_in, x) or not torch.equal(weight_in, weight):
        fail(
            "your function changed its input x or weight in place (e.g. with x.pow_() or /=). "
            "Compute a new tensor instead and leave the inputs as they are."
        )
    if not isinstance(out, torch.Tensor):
        fail(f"the result should be a torch.Tensor, but it is {type(out).__name__}.")
    if out.dtype != x.dtype:
        if out.dtype == torch.float32:
            fail(
                f"for {_name(x.dtype)} input your result is float32. Compute in float32 inside "
                "(x.float()) for accuracy, but cast back to the input's dtype before returning "
                "(.type_as(x)): the rest of the model runs in that dtype."
            )
        fail(
            f"for {_name(x.dtype)} input your result has dtype {_name(out.dtype)}; it should "
            f"keep the input's dtype. Cast back with .type_as(x)."
        )
    return out


def _mistakes(x: torch.Tensor, weight: torch.Tensor, eps: float) -> list[Mistake]:
    """Typical wrong versions of RMSNorm on these inputs, each with the hint that names it."""
    x64, w = x.double(), weight.double()
    ms = x64.pow(2).mean(dim=-1, keepdim=True)
    mistakes = [
        (
            x64 / (ms.sqrt() + eps) * w,
            "eps is added outside the square root: x / (sqrt(mean(x**2)) + eps). Put it inside: "
            "x / sqrt(mean(x**2) + eps), that is "
            "x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps).",
        ),
        (
            x64 / ms.sqrt() * w,
            "eps is missing: with tiny inputs the result is different. Divide by "
            "sqrt(mean(x**2) + eps).",
        ),
        (
            x64 * torch.rsqrt(ms + eps),
            "the weight is missing: multiply the normalised x by `weight` (one gain per feature).",
        ),
        (
            ref.layer_norm(x64, w, eps=eps),
            "you subtracted the mean: that is LayerNorm. RMSNorm does not centre x; it only "
            "divides x by sqrt(mean(x**2) + eps), then multiplies by weight.",
        ),
        (
            x64 * torch.rsqrt(x64.pow(2).sum(dim=-1, keepdim=True) + eps) * w,
            "you used the sqrt of the sum of squares, not of their mean: use "
            "x.pow(2).mean(dim=-1, keepdim=True).",
        ),
        (
            x64 / (ms + eps) * w,
            "the square root is missing: divide by sqrt(mean(x**2) + eps), not by "
            "mean(x**2) + eps.",
        ),
        (
            x64 * w * torch.rsqrt((x64 * w).pow(2).mean(dim=-1, keepdim=True) + eps),
            "the weight is applied before normalising. Normalise x first, then multiply by weight.",
        ),
    ]
    for axis in range(x.dim() - 1):
        wrong_ms = x64.pow(2).mean(dim=axis, keepdim=True)
        mistakes.append(
            (
                x64 * torch.rsqrt(wrong_ms + eps) * w,
                f"the mean is taken over axis {axis}, not the last axis. Each position is "
                "normalised over its own features: mean(dim=-1, keepdim=True).",
            )
        )
    mistakes.append(
        (
            x64 * torch.rsqrt(x64.pow(2).mean() + eps) * w,
            "the mean is taken over all values of x at once. Each position is normalised over "
            "its own features: mean(dim=-1, keepdim=True).",
        )
    )
    for fixed in (1e-5, 1e-6, 1e-8):
        if fixed != eps:
            mistakes.append(
                (
                    ref.rms_norm(x64, w, fixed),
                    f"the `eps` argument is ignored (your result fits eps={fixed:g}, but "
                    f"eps={eps:g} was passed). Use the eps you are given.",
                )
            )
    return mistakes


def _name(dtype: torch.dtype) -> str:
    """The dtype as a learner writes it: float16, not torch.float16."""
    return str(dtype).removeprefix("torch.")


def _match(
    out: torch.Tensor,
    expected: torch.Tensor,
    mistakes: Sequence[Mistake],
    label: str,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> None:
    """Compare with RMSNorm, naming a known mistake if the output matches one."""
    match_mistakes(out, expected, mistakes, label, _HINT, "RMSNorm", atol, rtol)
