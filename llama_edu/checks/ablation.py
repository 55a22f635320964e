"""Checks for the ablation lab: a post-norm block, and telling a real difference from noise."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..norm import RMSNorm
from ._core import Mistake, call, check, fail, match_mistakes

# ------------------------------------------------------------------------------ post-norm block


def _parts(dim: int, gen: torch.Generator) -> tuple[nn.Module, ...]:
    """Two sub-layers that change x differently and two norms with different gains."""
    attention = nn.Linear(dim, dim, bias=False)
    feed_forward = nn.Sequential(nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))
    norms = (RMSNorm(dim), RMSNorm(dim))
    with torch.no_grad():
        for module in (attention, feed_forward):
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        for norm in norms:
            norm.weight.copy_(torch.rand(dim, generator=gen) * 1.5 + 0.25)
    return (attention, feed_forward, *norms)


def _block_mistakes(x: torch.Tensor, attn: nn.Module, ffn: nn.Module, n1: nn.Module,
                    n2: nn.Module) -> list[Mistake]:  # fmt: skip
    h = n1(x + attn(x))
    pre_h = x + attn(n1(x))
    return [
        (pre_h + ffn(n2(pre_h)), "this is the pre-norm block, x + f(norm(x)). A post-norm "
         "block normalises after the residual addition: h = attention_norm(x + attention(x)), "
         "then ffn_norm(h + feed_forward(h))."),
        (x + attn(x) + ffn(x + attn(x)), "there is no normalisation at all. Apply attention_norm "
         "to x + attention(x) and ffn_norm to h + feed_forward(h)."),
        (h + ffn(h), "the second norm is missing: the block must end with ffn_norm(h + "
         "feed_forward(h))."),
        (n2(h + ffn(x)), "feed_forward sees x, but it must see h, the output of the first "
         "half of the block."),
        (n1(h + ffn(h)), "the second half uses attention_norm; it must use ffn_norm (each "
         "sub-layer has its own gain)."),
        (x + n1(attn(x)) + n2(ffn(x + n1(attn(x)))), "the norm is applied to the sub-layer's "
         "output only, x + norm(f(x)); "
         "post-norm normalises the sum, norm(x + f(x))."),
        (n2(h + ffn(h)) + x, "the input x is added once more at the end; in a post-norm block "
         "the residual additions happen inside the norms only."),
    ]


@check
def post_norm_block(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(x, attention, feed_forward, attention_norm, ffn_norm)`: a post-norm block."""
    gen = torch.Generator().manual_seed(0)
    cases = [("x of shape (2, 5, 8)", (2, 5, 8)), ("x of shape (1, 3, 16)", (1, 3, 16)),
             ("x of shape (4, 6) (no batch axis)", (4, 6))]  # fmt: skip
    for label, shape in cases:
        attn, ffn, n1, n2 = _parts(shape[-1], gen)
        x = torch.randn(shape, generator=gen) * 2
        x_in = x.clone()
        with torch.no_grad():
            out = call(fn, x_in, attn, ffn, n1, n2)
            if not torch.equal(x_in, x):
                fail("your function changed x in place (e.g. x += ...). Compute new tensors.")
            expected = n2(n1(x + attn(x)) + ffn(n1(x + attn(x))))
            match_mistakes(out, expected, _block_mistakes(x, attn, ffn, n1, n2), label)
    return (
        "equals ffn_norm(h + feed_forward(h)) with h = attention_norm(x + attention(x)) on 3 "
        "inputs, with two different norms and two different sub-layers"
    )


# ---------------------------------------------------------------------------- noise verdict

_VERDICTS = ("better", "worse", "within noise")


def reference_verdict(baseline: Sequence[float], variant: Sequence[float]) -> str:
    """The rule of the exercise: a mean difference no larger than either seed spread is noise."""
    noise = max(max(baseline) - min(baseline), max(variant) - min(variant))
    diff = statistics.fmean(variant) - statistics.fmean(baseline)
    if abs(diff) <= noise:
        return "within noise"
    return "better" if diff < 0 else "worse"


@check
def noise_verdict(fn: Callable[..., str]) -> str:
    """Check `fn(baseline, variant) -> "better" | "worse" | "within noise"` (excess bits/char)."""
    cases: list[tuple[str, list[float], list[float], str]] = [
        ("a clearly worse variant", [0.20, 0.21, 0.22], [0.40, 0.41, 0.43],
         "lower excess is better, so a variant whose excess is larger than the baseline's is "
         "'worse'. Did you flip the sign of the difference?"),
        ("a clearly better variant", [0.20, 0.21, 0.22], [0.10, 0.11, 0.12],
         "lower excess is better: a variant whose excess is smaller than the baseline's is "
         "'better'. Did you flip the sign of the difference?"),
        ("a difference smaller than the baseline's spread", [0.20, 0.25, 0.30], [0.27, 0.28,
         0.29], "the means differ by 0.03 but the baseline's own seeds differ by 0.10: that is "
         "'within noise'. Compare the difference of the means with the seed spread."),
        ("a difference smaller than the variant's spread only", [0.24, 0.25, 0.26],
         [0.20, 0.30, 0.40], "the variant's seeds spread over 0.20, more than the difference of "
         "the means (0.05): noise must be the larger of the two spreads, not the baseline's "
         "alone."),
        ("a difference exactly equal to the spread", [0.25, 0.75], [1.0, 1.0],
         "a difference equal to the spread is not resolved: use <= noise for 'within noise'."),
        ("seeds listed in another order", [0.22, 0.20, 0.21], [0.43, 0.40, 0.41], ""),
        ("single seeds (no spread known)", [0.30], [0.25], ""),
    ]  # fmt: skip
    for label, base, var, hint in cases:
        out = call(fn, list(base), list(var))
        want = reference_verdict(base, var)
        if out not in _VERDICTS:
            fail(f"with {label} your function returned {out!r}; return one of "
                 f"{', '.join(map(repr, _VERDICTS))}.")  # fmt: skip
        if out != want:
            fail(f"with {label} (baseline {base}, variant {var}) your function returned {out!r}, "
                 f"expected {want!r}. {hint}".rstrip())  # fmt: skip
    return "gives the right verdict on 7 cases (both signs, either spread, a tie, single seeds)"
