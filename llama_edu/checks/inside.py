"""Checks for the chapter that looks inside a trained model: logit lens, PCA, copy score."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .. import interpretability as ref
from ..attention import causal_mask
from ..norm import RMSNorm
from ._core import Mistake, call, check, close, fail, match_mistakes

# --------------------------------------------------------------------------- logit_lens

_LENS_HINT = (
    "Expected output(norm(hidden)): the model's final RMSNorm, then its output layer, on the "
    "last axis, giving logits of shape (..., vocab_size)."
)


def _lens_parts(dim: int, vocab: int, gen: torch.Generator) -> tuple[RMSNorm, nn.Linear]:
    """A final norm with a gain far from 1 and an output layer with random weights."""
    norm = RMSNorm(dim)
    output = nn.utils.skip_init(nn.Linear, dim, vocab, bias=False)  # no draw from the global RNG
    with torch.no_grad():
        norm.weight.copy_(0.5 + torch.rand(dim, generator=gen) * 2)
        output.weight.copy_(torch.randn(vocab, dim, generator=gen))
    return norm, output


@check
def logit_lens(fn: Callable[..., Any]) -> str:
    """Check `fn(hidden (..., dim), norm, output) -> logits (..., vocab)`: output(norm(hidden))."""
    gen = torch.Generator().manual_seed(0)
    # (label, leading shape, dim, vocab); the first case is square (dim == vocab), so that a
    # missing transpose or a swapped order gives the right shape and is caught by its values.
    cases = [
        ("hidden of shape (4, 6) and a square output layer (6 x 6)", (4,), 6, 6),
        ("hidden of shape (5, 8), vocab_size 11", (5,), 8, 11),
        ("hidden of shape (2, 3, 8), vocab_size 13", (2, 3), 8, 13),
    ]
    for label, lead, dim, vocab in cases:
        norm, output = _lens_parts(dim, vocab, gen)
        # a mean far from 0, so that centring (LayerNorm) changes the result a lot
        hidden = torch.randn(*lead, dim, generator=gen) * 3 + torch.randn(dim, generator=gen) * 4
        _check_lens_case(fn, label, hidden, norm, output)
    return (
        "equals output(norm(hidden)) on 3 inputs (1 and 2 leading axes, a square output "
        "layer); logits, not probabilities; inputs unchanged"
    )


def _check_lens_case(
    fn: Callable[..., Any], label: str, hidden: torch.Tensor, norm: RMSNorm, output: nn.Linear
) -> None:
    """Fail, naming the likely mistake, unless fn gives output(norm(hidden)) here."""
    hidden_in = hidden.clone()
    out = call(fn, hidden_in, norm, output)
    if not torch.equal(hidden_in, hidden):
        fail(
            "your function changed `hidden` in place. Compute new tensors and leave the "
            "residual stream as it is: the next layer's lens needs it."
        )
    if isinstance(out, torch.Tensor) and not out.is_floating_point():
        fail(
            f"with {label} the result has dtype {out.dtype}: you returned token ids (argmax?). "
            "Return the logits themselves, one score per vocabulary entry."
        )
    if isinstance(out, torch.Tensor):
        out = out.detach()
        if out.shape == hidden.shape and hidden.shape[-1] != output.out_features:
            fail(
                f"with {label} the result has the shape of `hidden`, {tuple(hidden.shape)}: "
                "one number per feature, not per vocabulary entry. You returned it without the "
                "output layer: decode with output(norm(hidden))."
            )
    with torch.no_grad():
        expected = output(norm(hidden)).double()
        match_mistakes(out, expected, _lens_mistakes(hidden, norm, output), label, _LENS_HINT)


def _lens_mistakes(hidden: torch.Tensor, norm: RMSNorm, output: nn.Linear) -> list[Mistake]:
    """Typical wrong logit lenses on these inputs, each with the hint that names it."""
    h = hidden.double()
    weight, gain, eps = output.weight.double(), norm.weight.double(), norm.eps
    normed = norm(hidden).double()
    logits = normed @ weight.T
    no_gain = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    centred = h - h.mean(-1, keepdim=True)
    layer_normed = centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + eps) * gain
    mistakes: list[Mistake] = [
        (
            h @ weight.T,
            "you forgot the final norm. The output layer was trained on norm(h), not on the raw "
            "residual stream, whose size grows from layer to layer: use output(norm(hidden)).",
        ),
        (
            torch.softmax(logits, dim=-1),
            "you applied softmax, so you returned probabilities. The lens returns logits, as the "
            "model's forward does; take softmax only when you need probabilities.",
        ),
        (
            torch.log_softmax(logits, dim=-1),
            "you returned log-probabilities (log_softmax). The lens returns the logits "
            "output(norm(hidden)) themselves.",
        ),
        (
            no_gain @ weight.T,
            "you divided by the RMS but left out the norm's learned weight (its gain). Call the "
            "model's norm module, norm(hidden), which also multiplies by norm.weight.",
        ),
        (
            layer_normed @ weight.T,
            "you subtracted the mean of the features (that is LayerNorm). Llama's RMSNorm does "
            "not centre: call the model's norm module, norm(hidden).",
        ),
    ]
    if weight.shape[0] == weight.shape[1]:  # only a square output layer lets these run
        mistakes += [
            (
                normed @ weight,
                "you multiplied by output.weight without transposing it. nn.Linear computes "
                "x @ weight.T; simply call output(norm(hidden)).",
            ),
            (
                norm(output(hidden)).double(),
                "you applied the norm after the output layer. The order is the model's: first "
                "the final norm, then the output layer: output(norm(hidden)).",
            ),
            (
                normed,
                "you returned norm(hidden) without the output layer. Decode it with "
                "output(...) to get one logit per vocabulary entry.",
            ),
        ]
    return mistakes


# --------------------------------------------------------------------------- pca_2d

_PCA_HINT = (
    "Expected (x - mean) @ V[:, :2]: centre the columns with the mean row x.mean(dim=0), take "
    "torch.linalg.svd(centred, full_matrices=False) -> U, S, Vh, and project onto the first "
    "two rows of Vh (the directions of largest variance). Either sign of a component is fine."
)


def _pca_data(n: int, d: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Points with clearly different variances along random directions, far from the origin."""
    scales = torch.tensor([6.0, 3.0, 1.5, 0.8, 0.5, 0.3, 0.2, 0.15, 0.1, 0.05])[:d]
    rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=gen))
    points = torch.randn(n, d, generator=gen) * scales @ rotation.T
    return (points + torch.randn(d, generator=gen) * 5 + 3).to(dtype)


@check
def pca_2d(fn: Callable[..., Any]) -> str:
    """Check `fn(x (N, D)) -> (N, 2)`: projections onto the first two principal components."""
    gen = torch.Generator().manual_seed(0)
    cases = [
        ("x of shape (30, 5)", _pca_data(30, 5, gen, torch.float32)),
        ("x of shape (6, 9) (fewer points than features)", _pca_data(6, 9, gen, torch.float32)),
        ("x of shape (40, 3) in float64", _pca_data(40, 3, gen, torch.float64)),
    ]
    for label, x in cases:
        x_in = x.clone()
        out = call(fn, x_in)
        if not torch.equal(x_in, x):
            fail(
                "your function changed x in place (e.g. x -= x.mean(...)). Compute the centred "
                "points as a new tensor: centred = x - x.mean(dim=0)."
            )
        _check_pca_case(out, x, label)
    return (
        "equals the projections onto the top 2 principal components on 3 inputs (N > D, "
        "N < D, float64), either sign of each component; input unchanged"
    )


def _same_up_to_sign(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shapes (N, 2), and each column of a equals the same column of b or its negative."""
    if a.shape != b.shape or a.dim() != 2:
        return False
    tol = {"atol": 1e-4, "rtol": 1e-4}
    return all(
        close(a[:, c], b[:, c], **tol) or close(a[:, c], -b[:, c], **tol)
        for c in range(a.shape[1])
    )


def _check_pca_case(out: Any, x: torch.Tensor, label: str) -> None:
    if not isinstance(out, torch.Tensor):
        fail(f"the result should be a torch.Tensor, but it is {type(out).__name__}.")
    out = out.detach()
    n, d = x.shape
    expected = ref.pca_2d(x).double()
    if _same_up_to_sign(out, expected):
        return
    if out.shape == (2, n) and _same_up_to_sign(out.T, expected):
        fail(
            f"with {label} the result has shape (2, {n}): it is transposed. Return one row per "
            f"point, shape ({n}, 2)."
        )
    for wrong, message in _pca_mistakes(x):
        if _same_up_to_sign(out, wrong):
            fail(f"with {label}: {message}")
    if out.shape != (n, 2):
        fail(f"with {label} the result has shape {tuple(out.shape)}; expected ({n}, 2). "
             + _PCA_HINT)
    if not torch.isfinite(out).all():
        fail(f"with {label} the result contains inf or nan. {_PCA_HINT}")
    fail(f"with {label} the result differs from the reference, even with signs flipped. "
         + _PCA_HINT)


def _pca_mistakes(x: torch.Tensor) -> list[tuple[torch.Tensor, str]]:
    """Typical wrong PCA projections of x, each with the hint that names it."""
    x = x.double()
    centred = x - x.mean(dim=0, keepdim=True)
    u, s, vh = torch.linalg.svd(centred, full_matrices=False)
    _, _, vh_raw = torch.linalg.svd(x, full_matrices=False)
    row_centred = x - x.mean(dim=1, keepdim=True)
    _, _, vh_rows = torch.linalg.svd(row_centred, full_matrices=False)
    standardised = centred / x.std(dim=0, keepdim=True)
    _, _, vh_std = torch.linalg.svd(standardised, full_matrices=False)
    mistakes = [
        (
            x @ vh_raw[:2].T,
            "you did not centre the points. Without subtracting the mean row, the first "
            "direction points at the mean, not along the spread. Use "
            "centred = x - x.mean(dim=0) before the SVD.",
        ),
        (
            x @ vh[:2].T,
            "you found the directions from the centred points but projected the raw x. Project "
            "the centred points: (x - x.mean(dim=0)) @ Vh[:2].T.",
        ),
        (
            u[:, :2],
            "you returned U[:, :2]. The columns of U have length 1; the projections are "
            "U[:, :2] * S[:2] (= centred @ Vh[:2].T), which keeps the real distances.",
        ),
        (
            row_centred @ vh_rows[:2].T,
            "you subtracted the mean of each row (dim=1). PCA subtracts the mean point, the "
            "mean of each column: x.mean(dim=0).",
        ),
        *(
            (
                centred @ smallest.T,
                "you took the two directions with the smallest variance. torch.linalg.svd sorts "
                "the singular values from largest to smallest, so use the first two rows, "
                "Vh[:2] (torch.linalg.eigh sorts eigenvalues from smallest to largest: take its "
                "last two columns, the largest first).",
            )
            for smallest in (vh[-2:], vh[-2:].flip(0))
        ),
        (
            centred @ vh[[1, 0]].T,
            "the two columns are in the wrong order. Column 0 must be the component with the "
            "largest variance (torch.linalg.eigh sorts eigenvalues from smallest to largest: "
            "take its columns [-1, -2], in that order).",
        ),
        (
            x[:, :2],
            "you returned the first two features of x. PCA projects onto new directions, the "
            "rows of Vh from the SVD of the centred points.",
        ),
        (
            centred[:, :2],
            "you returned the first two features of the centred points. Project them onto the "
            "first two principal directions: centred @ Vh[:2].T.",
        ),
        (
            standardised @ vh_std[:2].T,
            "you divided each feature by its standard deviation (PCA on the correlation "
            "matrix). Here PCA only centres, so that features with a large spread count more.",
        ),
        (
            u[:, :2] * s[:2] ** 2,
            "you multiplied U by S twice (S squared). The projections are U[:, :2] * S[:2].",
        ),
    ]
    if vh.shape[0] == vh.shape[1]:  # only then does Vh[:, :2] have a shape that runs
        mistakes.append(
            (
                centred @ vh[:, :2],
                "you used the columns of Vh. The principal directions are the rows of Vh "
                "(the columns of V = Vh.T): project with centred @ Vh[:2].T.",
            )
        )
    return mistakes


# --------------------------------------------------------------------------- copy_score

_COPY_HINT = (
    "Expected weights[..., later_start - 1, first].sum(dim=-1): the row of the query just "
    "before the later mention, the columns of the first mention's tokens, added up. The "
    "result has shape (layers, heads)."
)


def _random_attention(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Causal attention weights of the given (layers, heads, seq, seq) shape."""
    seq = shape[-1]
    return torch.softmax(torch.randn(*shape, generator=gen) * 2 + causal_mask(seq), dim=-1)


@check
def copy_score(fn: Callable[..., Any]) -> str:
    """Check `fn(weights (layers, heads, seq, seq), first, later_start) -> (layers, heads)`."""
    gen = torch.Generator().manual_seed(0)
    cases = [
        ("weights (2, 3, 9, 9), first = [2, 3, 4], later_start = 7", (2, 3, 9, 9), [2, 3, 4], 7),
        ("weights (1, 4, 12, 12), first = [3, 4], later_start = 10", (1, 4, 12, 12), [3, 4], 10),
        ("weights (3, 2, 8, 8), first = [1, 2, 3], later_start = 5", (3, 2, 8, 8), [1, 2, 3], 5),
        ("weights (2, 2, 6, 6), first = [1], later_start = 4", (2, 2, 6, 6), [1], 4),
    ]
    for label, shape, first, later_start in cases:
        weights = _random_attention(shape, gen)
        weights_in, first_in = weights.clone(), list(first)
        out = call(fn, weights_in, first_in, later_start)
        if not torch.equal(weights_in, weights) or first_in != first:
            fail(
                "your function changed `weights` or `first` in place. Read the weights with "
                "indexing and leave the inputs as they are."
            )
        if isinstance(out, torch.Tensor):
            out = out.detach()
        expected = ref.copy_score(weights, first, later_start).double()
        match_mistakes(
            out, expected, _copy_mistakes(weights, first, later_start), label, _COPY_HINT
        )
    return (
        "equals weights[..., later_start - 1, first].sum(-1) on 4 inputs (names of 1 to 3 "
        "tokens); shape (layers, heads); inputs unchanged"
    )


def _copy_mistakes(weights: torch.Tensor, first: list[int], later_start: int) -> list[Mistake]:
    """Typical wrong copy scores on these inputs, each with the hint that names it."""
    w = weights.double()
    query = later_start - 1
    mistakes: list[Mistake] = [
        (
            w[..., later_start, first].sum(-1),
            "you used the row of the later mention itself (query later_start). The query that "
            "must predict the name is the position just before it: later_start - 1.",
        ),
        (
            w[..., first, query].sum(-1),
            "you swapped queries and keys: weights[..., q, k] is the weight that query q puts on "
            "key k, so the query picks the row and the first mention picks the columns.",
        ),
        (
            w[..., query, :].sum(-1),
            "you added up the whole row of the query, which is always 1. Add only the columns "
            "of the first mention: weights[..., later_start - 1, first].",
        ),
        (
            w[..., first, later_start].sum(-1),
            "you swapped queries and keys and used the row of the later mention itself. The "
            "query is later_start - 1 (it predicts the name), and it picks the row.",
        ),
    ]
    if len(first) > 1:  # with a one-token name these agree with the right answer
        mistakes += [
            (
                w[..., query, first].mean(-1),
                "you averaged over the tokens of the first mention. Add them up: the score is "
                "the total weight on the name, whatever the number of pieces it has.",
            ),
            (
                w[..., query, first].amax(-1),
                "you took the largest weight among the first mention's tokens. Add them all "
                "up: a name split into pieces gets weight on several of them.",
            ),
            (
                w[..., query, first[0]],
                "you used only the first token of the first mention. A name may be several "
                "pieces: add the weights of all of them.",
            ),
            (
                w[..., query, first[-1]],
                "you used only the last token of the first mention. A name may be several "
                "pieces: add the weights of all of them.",
            ),
            (
                w[..., query, first[0] : first[-1]].sum(-1),
                "you left out the last token of the first mention (a slice a:b stops before "
                "b). Index with the list `first` itself.",
            ),
        ]
    return mistakes
