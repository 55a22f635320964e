"""Checks for the generation chapter: top-k filtering of logits, top-p filtering of probs."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import generate as ref
from ._core import Mistake, call, check, close, fail, match_mistakes

NEG_INF = float("-inf")


def _same_with_inf(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shapes, -inf in the same places, and the finite entries close."""
    if not isinstance(a, torch.Tensor) or a.shape != b.shape:
        return False
    a, b = a.double(), b.double()
    if not torch.equal(torch.isneginf(a), torch.isneginf(b)):
        return False
    finite = ~torch.isneginf(b)
    return bool(torch.allclose(a[finite], b[finite], atol=1e-6, rtol=1e-5))


# --------------------------------------------------------------------------- top_k_filter


def _top_k_cases() -> list[tuple[str, torch.Tensor, int]]:
    gen = torch.Generator().manual_seed(3)
    return [
        ("logits [2.0, -1.0, 0.5, 3.0, 1.0] and k=2", torch.tensor([2.0, -1.0, 0.5, 3.0, 1.0]), 2),
        ("random logits of shape (3, 10) and k=3", torch.randn(3, 10, generator=gen) * 2, 3),
        ("random logits of shape (2, 4, 7) and k=1", torch.randn(2, 4, 7, generator=gen), 1),
        ("random logits of shape (6,) and k=6 (= V)", torch.randn(6, generator=gen), 6),
        ("negative logits of shape (2, 5) and k=4", -torch.rand(2, 5, generator=gen) - 1, 4),
    ]


def _top_k_mistakes(logits: torch.Tensor, k: int) -> list[Mistake]:
    """Typical wrong top-k results on these inputs, each with the message that names it."""
    v = logits.shape[-1]
    out: list[Mistake] = []
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    if k > 1:
        out.append((
            logits.masked_fill(logits <= kth, NEG_INF),
            "only k-1 entries survive: the k-th largest logit must be kept. Compare with "
            "`logits < kth` (strictly smaller is removed), not `<=`.",
        ))
    if k < v:
        if k + 1 <= v:
            kth1 = torch.topk(logits, k + 1, dim=-1).values[..., -1:]
            out.append((
                logits.masked_fill(logits < kth1, NEG_INF),
                "k+1 entries survive: you took the (k+1)-th value as the threshold (an "
                "off-by-one in the index). The threshold is topk(logits, k).values[..., -1].",
            ))
        out.append((
            logits.masked_fill(logits < kth, 0.0),
            "the removed entries are 0, but a logit of 0 still gets probability e^0 after the "
            "softmax. Set them to -inf (float('-inf')), which the softmax turns into 0.",
        ))
        low = torch.topk(logits, k, dim=-1, largest=False).values[..., -1:]
        out.append((
            logits.masked_fill(logits > low, NEG_INF),
            "you kept the k *smallest* logits. Keep the k largest: torch.topk returns the "
            "largest by default (largest=True), or sort in descending order.",
        ))
        out.append((
            torch.softmax(logits.masked_fill(logits < kth, NEG_INF), dim=-1),
            "you returned probabilities (a softmax of the filtered logits). This function "
            "returns logits: the sampler applies the softmax afterwards.",
        ))
        if logits.dim() > 1:
            flat_kth = torch.topk(logits.flatten(), k).values[-1]
            out.append((
                logits.masked_fill(logits < flat_kth, NEG_INF),
                "you took the top k over the whole tensor. Each row (the last axis) is its own "
                "distribution: use dim=-1 in torch.topk and keepdim for the threshold.",
            ))
    return out


@check
def top_k_filter(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(logits (..., V), k) -> Tensor (..., V)`: outside the top k set to -inf."""
    for label, logits, k in _top_k_cases():
        given = logits.clone()
        out = call(fn, given, k)
        if not torch.equal(given, logits):
            fail(
                "your function changed `logits` in place (e.g. with masked_fill_ or an index "
                "assignment). Return a new tensor (masked_fill, torch.where) and leave the "
                "input as it is: the caller may still need the original logits."
            )
        expected = ref.top_k_filter(logits, k)
        if _same_with_inf(out, expected):
            continue
        if isinstance(out, torch.Tensor) and out.shape[:-1] == logits.shape[:-1] and (
            out.shape[-1] == k != logits.shape[-1]
        ):
            fail(
                f"with {label} the result has only k={k} entries per row: these are the top-k "
                "values, not the filtered logits. Keep shape (..., V) and put -inf where a "
                "token is not among the k largest, so that ids stay where they were."
            )
        for wrong, message in _top_k_mistakes(logits, k):
            if _same_with_inf(out, wrong):
                fail(f"with {label}: {message}")
        if not isinstance(out, torch.Tensor) or out.shape != logits.shape:
            match_mistakes(out, expected, [], label)  # names the type or the shape
        kept = (~torch.isneginf(out)).sum(-1).flatten().tolist()
        fail(
            f"with {label} the result is not the logits with everything outside the top {k} "
            f"set to -inf. It keeps {kept} entries per row (expected {k} each); entries that "
            "are kept must be the original logits, unchanged."
        )
    return "keeps exactly the k largest logits of every row unchanged, -inf elsewhere; 5 inputs"


# --------------------------------------------------------------------------- top_p_filter


def _top_p_cases() -> list[tuple[str, torch.Tensor, float]]:
    gen = torch.Generator().manual_seed(4)
    halves = torch.tensor([0.5, 0.25, 0.125, 0.125])
    return [
        ("probs [0.1, 0.4, 0.2, 0.3] and p=0.6", torch.tensor([0.1, 0.4, 0.2, 0.3]), 0.6),
        ("probs [0.5, 0.25, 0.125, 0.125] and p=0.75 (the mass reaches p exactly)", halves, 0.75),
        ("probs [0.7, 0.2, 0.1] and p=0.5 (smaller than the top probability)",
         torch.tensor([0.7, 0.2, 0.1]), 0.5),
        ("random probs of shape (3, 12) and p=0.9",
         torch.softmax(torch.randn(3, 12, generator=gen) * 2, -1), 0.9),
        ("random probs of shape (2, 2, 6) and p=0.3",
         torch.softmax(torch.randn(2, 2, 6, generator=gen), -1), 0.3),
        ("random probs of shape (8,) and p=1.0", torch.softmax(torch.randn(8, generator=gen), -1),
         1.0),
    ]


def _top_p_mistakes(probs: torch.Tensor, p: float) -> list[Mistake]:
    """Typical wrong top-p results on these inputs, each with the message that names it."""
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    cum = sorted_probs.cumsum(-1)
    before = F.pad(cum[..., :-1], (1, 0))

    def back(keep: torch.Tensor, normalise: bool = True) -> torch.Tensor:
        kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)
        return kept / kept.sum(-1, keepdim=True) if normalise else kept

    reference_keep = (before < p).to(probs.dtype)
    out: list[Mistake] = [
        (
            back(reference_keep, normalise=False),
            "the kept probabilities are right but do not sum to 1: divide by their sum "
            "(renormalise) so that the result is a distribution again.",
        ),
        (
            sorted_probs * reference_keep / (sorted_probs * reference_keep).sum(-1, keepdim=True),
            "the result is in sorted order. Put every probability back at its token id (scatter "
            "with the sort indices), so that position j still means token j.",
        ),
    ]
    if (cum <= p).any():
        without_crossing = (cum <= p).to(probs.dtype)
        if without_crossing.sum(-1).min() > 0:
            out.append((
                back(without_crossing),
                "the token that crosses p is missing: you kept tokens while the cumulative sum "
                "*including* the token is <= p. Keep a token when the mass *before* it is still "
                "below p (cumsum - probs < p), so the kept set reaches p.",
            ))
    rolled = torch.roll(cum > p, 1, dims=-1)  # wraps the last entry round to the front
    if rolled[..., 0].any():
        out.append((
            back((~rolled).to(probs.dtype)),
            "the most likely token is missing: torch.roll wraps the last entry of the mask "
            "round to the front. Shift with F.pad(mask[..., :-1], (1, 0)) (or set the first "
            "entry to keep), so that the top token is always kept.",
        ))
    out.append((
        back((cum < p).to(probs.dtype)),
        "the token that crosses p is missing (and, when the top probability alone exceeds p, "
        "everything is removed). Keep a token when the mass *before* it is below p.",
    ))
    asc, asc_order = torch.sort(probs, dim=-1, descending=False, stable=True)
    asc_before = F.pad(asc.cumsum(-1)[..., :-1], (1, 0))
    asc_kept = torch.zeros_like(probs).scatter(-1, asc_order, asc * (asc_before < p))
    out.append((
        asc_kept / asc_kept.sum(-1, keepdim=True),
        "you kept the *least* likely tokens: sort in descending order "
        "(torch.sort(..., descending=True)) so that the mass is collected from the top.",
    ))
    return out


TIE = 1e-6
"""Mass differences this small count as a tie with p (float32 sums of probabilities)."""


def _a_nucleus(out: torch.Tensor, probs: torch.Tensor, p: float) -> bool:
    """True when `out` is a correct top-p result under any tie convention.

    Correct means: the kept tokens are a top set (no removed token is more likely than a kept
    one, so equal probabilities may be kept in either order), the mass before the least likely
    kept token is not above p, the kept mass is not below p (both up to TIE), and the kept
    probabilities are renormalised at their ids. This accepts the rule of chapter 09 (keep when
    the mass before is < p), Meta's `sample_top_p` (remove when the mass before is > p) and
    Hugging Face's TopPLogitsWarper (sort ascending, remove while the cumulative mass is
    <= 1 - p), which differ only where a sum of probabilities equals p exactly.
    """
    if not isinstance(out, torch.Tensor) or out.shape != probs.shape:
        return False
    if not torch.isfinite(out).all():
        return False
    q = probs.double() / probs.double().sum(-1, keepdim=True)
    q, o = q.reshape(-1, q.shape[-1]), out.double().reshape(-1, q.shape[-1])
    kept = o.abs() > TIE
    for q_row, k_row in zip(q, kept, strict=True):
        if not k_row.any():
            return False
        if (~k_row).any() and q_row[~k_row].max() > q_row[k_row].min():
            return False  # not a top set: a removed token is more likely than a kept one
        mass = q_row[k_row].sum().item()
        if mass < p - TIE or mass - q_row[k_row].min().item() > p + TIE:
            return False
    renormalised = q * kept / (q * kept).sum(-1, keepdim=True)
    return close(o, renormalised, atol=1e-6)


@check
def top_p_filter(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(probs (..., V), p) -> Tensor (..., V)`: the renormalised top-p nucleus.

    Where the sorted probabilities add up to p exactly, rules differ: chapter 09 (and the
    library) removes a token whose preceding mass equals p, Meta's `sample_top_p` in LLaMA's
    generation.py keeps it (it removes a token only when the mass before it is > p), and Hugging
    Face's TopPLogitsWarper sorts in ascending order and removes tokens while their cumulative
    mass is <= 1 - p. Among equal probabilities any of them may be the one kept. All of these
    are accepted; the check rejects results that differ anywhere else.
    """
    for label, probs, p in _top_p_cases():
        given = probs.clone()
        out = call(fn, given, p)
        if not torch.equal(given, probs):
            fail(
                "your function changed `probs` in place. Return a new tensor and leave the "
                "input as it is."
            )
        expected = ref.top_p_filter(probs, p)
        if isinstance(out, torch.Tensor) and out.shape == probs.shape and torch.isnan(out).any():
            fail(
                f"with {label} the result contains nan: probably every token was removed (so "
                "you divided 0 by 0). The most likely token must always be kept, even when its "
                "probability alone is above p."
            )
        if _a_nucleus(out, probs, p):
            continue  # the chapter's rule, or another tie convention (Meta's, Hugging Face's)
        match_mistakes(
            out,
            expected,
            _top_p_mistakes(probs, p),
            label,
            "Expected: sort from most to least likely, keep a token while the mass before it "
            "is below p, put the kept probabilities back at their ids, divide by their sum. "
            "(Where the mass before a token equals p exactly, keeping it, as Meta's "
            "sample_top_p does, is accepted too.)",
            atol=1e-6,
        )
    return (
        "keeps the smallest top set that reaches p (the crossing token and the top token "
        "included), renormalised, at the original ids; 6 inputs incl. p=1 and an exact tie"
    )
