"""Checks for chapter 11's circuit methods: the induction score and patching one head."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .. import interpretability as ref
from ..attention import causal_mask
from ._core import Mistake, call, check, fail, match_mistakes

# --------------------------------------------------------------------------- induction_score

_INDUCTION_HINT = (
    "Expected, for rows [<s>, block, block] of 1 + 2 * length tokens: the queries of the second "
    "repeat, q = 1 + length .. 2 * length, each read at key q - length + 1 (the token after the "
    "earlier copy of token q), averaged over those `length` queries. Shape: the leading axes."
)


def _random_weights(lead: tuple[int, ...], seq: int, gen: torch.Generator) -> torch.Tensor:
    """Causal attention weights (..., seq, seq) that are far from uniform."""
    scores = torch.randn(*lead, seq, seq, generator=gen) * 2 + causal_mask(seq)
    return torch.softmax(scores, dim=-1)


def _pick(w: torch.Tensor, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    return w[..., queries, keys]


@check
def induction_score(fn: Callable[..., Any]) -> str:
    """Check `fn(weights (..., 1 + 2L, 1 + 2L), length L) -> (...)`."""
    gen = torch.Generator().manual_seed(0)
    cases = [
        ("weights (2, 3, 9, 9), length 4", (2, 3), 4),
        ("weights (4, 13, 13), length 6", (4,), 6),
        ("weights (1, 2, 2, 7, 7), length 3", (1, 2, 2), 3),
    ]
    for label, lead, length in cases:
        weights = _random_weights(lead, 1 + 2 * length, gen)
        weights_in = weights.clone()
        out = call(fn, weights_in, length)
        if not torch.equal(weights_in, weights):
            fail("your function changed `weights` in place. Read the weights with indexing.")
        if isinstance(out, torch.Tensor):
            out = out.detach()
        expected = ref.induction_score(weights, length).double()
        match_mistakes(out, expected, _induction_mistakes(weights, length), label,
                       _INDUCTION_HINT)
    return (
        "equals the mean weight from each token of the second repeat to the token after its "
        "earlier copy, on 3 inputs (blocks of 3, 4 and 6 tokens); inputs unchanged"
    )


def _induction_mistakes(weights: torch.Tensor, length: int) -> list[Mistake]:
    """Typical wrong induction scores on these inputs, each with the hint that names it."""
    w = weights.double()
    n = length
    second = torch.arange(1 + n, 1 + 2 * n)  # the queries of the second repeat
    return [
        (
            _pick(w, second, second - n).mean(-1),
            "you read the earlier occurrence of the token itself (key q - length). An induction "
            "head looks one further: at the token that came *after* it, key q - length + 1, "
            "because that is the token to predict next.",
        ),
        (
            _pick(w, second, second - n + 2).mean(-1),
            "you are off by one: key q - length + 2 is two tokens after the earlier copy. The "
            "token after the earlier copy of token q is at q - length + 1.",
        ),
        (
            _pick(w, second, second - 1).mean(-1),
            "you measured the weight on the previous token (key q - 1): that is a "
            "previous-token head. The induction key is q - length + 1.",
        ),
        (
            _pick(w, second - 1, second - n).mean(-1),
            "you forgot the <s> at position 0: the first block starts at position 1, so the "
            "second repeat is at queries 1 + length .. 2 * length, read at q - length + 1.",
        ),
        (
            _pick(w, second[:-1], second[:-1] - n + 1).mean(-1),
            "you left out the last query of the second repeat (range(a, b) stops before b). "
            "Average over all `length` queries 1 + length .. 2 * length.",
        ),
        (
            _pick(w, torch.arange(n, 1 + 2 * n), torch.arange(1, n + 2)).mean(-1),
            "you also averaged over the last query of the first repeat. Only the `length` "
            "queries of the second repeat (1 + length .. 2 * length) have an earlier copy.",
        ),
        (
            w.diagonal(offset=1 - n, dim1=-2, dim2=-1).mean(-1),
            "you averaged the whole diagonal q - length + 1, also over queries of the first "
            "repeat, whose tokens have no earlier copy. Average only over the second repeat.",
        ),
        (
            _pick(w, second, second - n + 1).sum(-1),
            "you added the weights up. Take their mean over the queries, so that a perfect "
            "induction head scores 1.",
        ),
        (
            _pick(w, second - n + 1, second).mean(-1),
            "you swapped queries and keys: weights[..., q, k] is the weight that query q puts "
            "on key k, so the query picks the row.",
        ),
        (
            _pick(w, second, second - n + 1).mean(),
            "you averaged over every axis and returned one number. Keep the leading axes (one "
            "score per layer and head): average over the queries only, mean(dim=-1).",
        ),
    ]


# --------------------------------------------------------------------------- patch_head

_PATCH_HINT = (
    "Expected a copy of `corrupt` in which only head `head` (features head * head_dim .. "
    "(head + 1) * head_dim - 1) at `position` (or at every position when it is None) holds the "
    "values of `clean`, in every row of the batch."
)


@check
def patch_head(fn: Callable[..., Any]) -> str:
    """Check `fn(corrupt, clean, head, position, head_dim) -> patched corrupt`."""
    gen = torch.Generator().manual_seed(0)
    cases = [  # (label, shape (batch, seq, heads * head_dim), head, position, head_dim)
        ("5 rows of 6 tokens, 4 heads of width 3, head 1 at position 2", (5, 6, 12), 1, 2, 3),
        ("1 row of 5 tokens, 4 heads of width 2, head 3 at position 0", (1, 5, 8), 3, 0, 2),
        ("3 rows of 7 tokens, 2 heads of width 4, head 0 at position 6", (3, 7, 8), 0, 6, 4),
        ("2 rows of 5 tokens, 3 heads of width 2, head 2 at every position (None)", (2, 5, 6),
         2, None, 2),
    ]
    for label, shape, head, position, head_dim in cases:
        corrupt = torch.randn(*shape, generator=gen)
        clean = torch.randn(*shape, generator=gen)
        corrupt_in, clean_in = corrupt.clone(), clean.clone()
        out = call(fn, corrupt_in, clean_in, head, position, head_dim)
        if not torch.equal(clean_in, clean):
            fail("your function changed `clean` in place. Copy from it; leave it as it is.")
        if not torch.equal(corrupt_in, corrupt):
            fail(
                "your function changed `corrupt` in place. Patch a copy (corrupt.clone()): the "
                "corrupted run's activations are needed again for the next head and position."
            )
        if isinstance(out, torch.Tensor):
            out = out.detach()
        expected = ref.patch_head(corrupt, clean, head, position, head_dim).double()
        mistakes = _patch_mistakes(corrupt, clean, head, position, head_dim)
        match_mistakes(out, expected, mistakes, label, _PATCH_HINT, atol=0.0, rtol=0.0)
    return (
        "patches one head at one position (and at every position for None) in every row, "
        "on 4 inputs; the inputs are unchanged"
    )


def _patch_mistakes(
    corrupt: torch.Tensor, clean: torch.Tensor, head: int, position: int | None, d: int
) -> list[Mistake]:
    """Typical wrong patches on these inputs, each with the hint that names it."""
    where = slice(None) if position is None else position
    features = slice(head * d, (head + 1) * d)

    def patched(base: torch.Tensor, source: torch.Tensor, rows: Any, cols: Any,
                batch: Any = slice(None)) -> torch.Tensor:
        out = base.double().clone()
        out[batch, rows, cols] = source.double()[batch, rows, cols]
        return out

    mistakes: list[Mistake] = [
        (
            patched(clean, corrupt, where, features),
            "you patched the wrong run: you started from `clean` and put the corrupted head "
            "in. Start from a copy of `corrupt` and bring the clean head's values in.",
        ),
        (
            clean.double(),
            "you returned the clean activations. Only one head at one position comes from "
            "`clean`; everything else stays as in `corrupt`.",
        ),
        (
            corrupt.double(),
            "nothing was patched: the result equals `corrupt`. Did you patch a copy and "
            "return the original, or use a slice that is empty?",
        ),
        (
            patched(corrupt, clean, where, slice(head, head + d)),
            "you took the features head .. head + head_dim. Head h owns the features "
            "h * head_dim .. (h + 1) * head_dim - 1 (the heads sit side by side).",
        ),
        (
            patched(corrupt, clean, where, slice(head * d, (head + 1) * d - 1)),
            "you left out the last feature of the head: slice(a, b) stops before b, so use "
            "slice(head * head_dim, (head + 1) * head_dim).",
        ),
    ]
    if position is not None:
        mistakes += [
            (
                patched(corrupt, clean, position, slice(None)),
                "you patched every head at that position: the whole layer's attention output. "
                "Patch only the features of one head.",
            ),
            (
                patched(corrupt, clean, slice(None), features),
                "you patched the head at every position. Patch it at `position` only (all "
                "positions only when position is None).",
            ),
        ]
        if position < corrupt.shape[0]:
            mistakes.append((
                patched(corrupt, clean, slice(None), features, batch=position),
                "you used `position` on the batch axis. The tensors are (batch, seq, heads * "
                "head_dim): the position is the second axis, out[:, position, ...].",
            ))
    return mistakes
