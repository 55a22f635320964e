"""Checks for the attention chapter: softmax, the causal mask, attention itself, repeat_kv."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import attention as ref
from ._core import Mistake, call, check, close, expect_tensor, fail, match_mistakes


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


# --------------------------------------------------------------------------- causal mask


@check
def causal_mask(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(seq_len: int, start_pos: int = 0) -> Tensor` of 0 and -inf, (seq, start + seq)."""
    for seq_len, start_pos in [(4, None), (1, None), (5, 0), (5, 3), (1, 6), (7, 2)]:
        if start_pos is None:
            out, start_pos = call(fn, seq_len), 0
        else:
            out = call(fn, seq_len, start_pos)
        _check_mask(out, seq_len, start_pos)
    return (
        "right shape (seq_len, start_pos + seq_len), 0 and -inf in the right places "
        "for 6 sizes incl. start_pos > 0 and a single new token"
    )


def _check_mask(out: object, seq_len: int, start_pos: int) -> None:
    """Fail, naming the likely mistake, unless `out` is the causal mask for these arguments."""
    label = f"seq_len={seq_len}, start_pos={start_pos}"
    total = start_pos + seq_len
    numbers = (
        "The mask is added to the scores, so it must hold numbers: 0.0 where a key may be seen "
        "and float('-inf') where it may not."
    )
    if not isinstance(out, torch.Tensor):
        fail(f"the result should be a torch.Tensor, but it is {type(out).__name__}.")
    if out.dtype == torch.bool:
        fail(f"with {label} your mask holds True/False. {numbers}")
    if out.dim() > 2 and tuple(out.squeeze().shape) == (seq_len, total):
        fail(
            f"with {label} your mask has shape {tuple(out.shape)}; return the 2-D mask "
            f"({seq_len}, {total}). Broadcasting adds the batch and head axes when it is added."
        )
    if start_pos and tuple(out.shape) == (seq_len, seq_len):
        fail(
            f"with {label} your mask has shape ({seq_len}, {seq_len}): start_pos is ignored. "
            f"The new queries also see the {start_pos} cached keys, so the shape is "
            f"(seq_len, start_pos + seq_len) = ({seq_len}, {total})."
        )
    if not out.is_floating_point():
        fail(f"with {label} your mask has dtype {str(out.dtype)[6:]}. {numbers}")
    if tuple(out.shape) == (seq_len, total):
        values = set(out.unique().tolist())
        if 1.0 in values and values <= {0.0, 1.0}:
            fail(
                f"with {label} your mask holds 1 and 0. {numbers} Adding 1 would not hide "
                "anything; -inf makes softmax give exactly 0."
            )
        if torch.isfinite(out).all() and out.min() < -1.0:
            fail(
                f"with {label} your mask uses {out.min().item():.3g} instead of -inf. Use "
                "float('-inf'), so that hidden keys get exactly 0 weight."
            )
    query = torch.arange(start_pos, total)[:, None]  # absolute position of each query
    key = torch.arange(total)[None, :]

    def hide(hidden: torch.Tensor) -> torch.Tensor:
        """A mask with -inf where `hidden` is True."""
        return torch.zeros(seq_len, total).masked_fill(hidden, float("-inf"))

    flipped = (
        "the triangle is flipped: -inf belongs above the diagonal (keys after the query), "
        "0 on and below it. Use torch.triu, not torch.tril."
    )
    mistakes = [
        (
            hide(key >= query),
            "off by one: the diagonal is masked, so no query sees its own key. A query at "
            "position p sees keys 0 .. p: use torch.triu(..., diagonal=start_pos + 1).",
        ),
        (
            hide(key > query + 1),
            "off by one: every query sees one future key. Hide all keys after the query's "
            "own position: torch.triu(..., diagonal=start_pos + 1).",
        ),
        (hide(key < query), flipped),
        (hide(key <= query), flipped),
    ]
    if start_pos:
        mistakes.append(
            (
                hide(key > query - start_pos),
                "start_pos is ignored in the pattern: query i sits at position start_pos + i, "
                "so it sees keys 0 .. start_pos + i. Shift the triangle: "
                "torch.triu(..., diagonal=start_pos + 1).",
            )
        )
    match_mistakes(
        out,
        ref.causal_mask(seq_len, start_pos),
        mistakes,
        label,
        "Query i (position start_pos + i) may see keys 0 .. start_pos + i (value 0); later keys "
        "get -inf.",
    )


# --------------------------------------------------------------------------- attention


_ATTENTION_HINT = (
    "Shapes: scores = q @ k.transpose(-2, -1) is (batch, n_heads, seq, kv_seq); softmax over "
    "the last axis; weights @ v is (batch, n_heads, seq, head_dim)."
)


@check
def attention(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(q, k, v, mask=None)` against softmax(q k^T / sqrt(head_dim) + mask) v."""
    gen = torch.Generator().manual_seed(0)
    # (label, batch, n_heads, seq, kv_seq, head_dim, mask); kv_seq != head_dim everywhere.
    cases = [
        ("no mask", 1, 2, 4, 4, 8, None),
        ("a random additive mask", 2, 3, 5, 5, 16, torch.randn(5, 5, generator=gen) * 2),
        ("a causal mask", 2, 2, 6, 6, 8, ref.causal_mask(6)),
        ("3 new queries after 4 cached keys", 2, 2, 3, 7, 8, ref.causal_mask(3, 4)),
        ("one query and no mask", 1, 4, 1, 6, 32, None),
    ]
    for label, batch, heads, seq, kv_seq, head_dim, mask in cases:
        q = torch.randn(batch, heads, seq, head_dim, generator=gen)
        k = torch.randn(batch, heads, kv_seq, head_dim, generator=gen)
        v = torch.randn(batch, heads, kv_seq, head_dim, generator=gen)
        inputs = [q, k, v] + ([] if mask is None else [mask])
        copies = [t.clone() for t in inputs]
        try:
            out = call(fn, *copies)
        except NotImplementedError:
            raise
        except Exception as failure:  # call() already described the crash
            fail(f"with {label}: {failure}\n{_ATTENTION_HINT}")
        if any(not torch.equal(a, b) for a, b in zip(copies, inputs, strict=True)):
            fail(
                "your function changed q, k, v or the mask in place (e.g. with masked_fill_ "
                "or +=). Compute new tensors and leave the inputs as they are."
            )
        # float64 is accepted (more precise, compared in float64); a lower precision is not.
        if isinstance(out, torch.Tensor) and out.dtype not in (q.dtype, torch.float64):
            fail(
                f"with {label} the result has dtype {str(out.dtype)[6:]}; expected float32 "
                "like q, k and v (float64 is also accepted)."
            )
        if isinstance(out, torch.Tensor) and torch.isnan(out).any():
            fail(
                f"with {label} the result contains nan. A common cause is multiplying the "
                "mask with the scores (-inf * 0 = nan, -inf * -1 = +inf); the mask is added: "
                "scores + mask."
            )
        match_mistakes(
            out,
            ref.attention(q, k, v, mask),
            _attention_mistakes(q, k, v, mask),
            f"{label} (q {tuple(q.shape)}, k and v {tuple(k.shape)})",
            "Expected softmax(q @ k.transpose(-2, -1) / sqrt(head_dim) + mask, dim=-1) @ v.",
        )
    return (
        "equals softmax(q k^T / sqrt(d) + mask) v on 5 inputs (batch > 1, causal and random "
        "masks, kv_seq > seq, mask optional)"
    )


def _attention_mistakes(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> list[Mistake]:
    """Typical wrong attention results on these inputs, each with the hint that names it."""
    q, k, v = q.double(), k.double(), v.double()
    head_dim = q.shape[-1]
    raw = q @ k.transpose(-2, -1)
    add = torch.zeros(()) if mask is None else mask.double()

    def weights(scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Softmax of the scores along `dim`."""
        return torch.softmax(scores, dim=dim)

    scaled = raw / math.sqrt(head_dim)
    mistakes = [
        (
            weights(raw / head_dim + add) @ v,
            "the scores are divided by head_dim; divide them by sqrt(head_dim) "
            "(math.sqrt(q.shape[-1])).",
        ),
        (
            weights(raw + add) @ v,
            "the scores are not scaled: divide q @ k^T by sqrt(head_dim) before the softmax, "
            "or large head_dim makes the softmax too sharp.",
        ),
        (
            weights(raw * math.sqrt(head_dim) + add) @ v,
            "the scores are multiplied by sqrt(head_dim); divide by it instead.",
        ),
        (
            weights(scaled + add, dim=-2) @ v,
            "the softmax runs over the queries axis (dim=-2). Each query's weights over the "
            "keys must sum to 1: torch.softmax(scores, dim=-1).",
        ),
        (
            weights(scaled + add, dim=1) @ v,
            "the softmax runs over the heads axis (dim=1). Each query's weights over the keys "
            "must sum to 1: torch.softmax(scores, dim=-1).",
        ),
        (
            weights(scaled + add) @ k,
            "the weights multiply k; they must multiply v: weights @ v.",
        ),
        (
            weights(scaled + add),
            "you returned the attention weights. Multiply them by v to get the output: "
            "weights @ v.",
        ),
    ]
    if mask is not None:
        mistakes += [
            (
                weights(scaled) @ v,
                "the mask is ignored: add it to the scores before the softmax "
                "(scores = scores + mask).",
            ),
            (
                weights(scaled * add) @ v,
                "the mask is multiplied with the scores; it is additive: scores + mask "
                "(0 keeps a score, -inf removes it).",
            ),
            (
                weights(scaled - add) @ v,
                "the mask is subtracted; add it: scores + mask.",
            ),
            (
                weights((raw + add) / math.sqrt(head_dim)) @ v,
                "the mask is divided by sqrt(head_dim) together with the scores. Scale first, "
                "then add the mask: q @ k^T / sqrt(head_dim) + mask.",
            ),
        ]
    return mistakes


# --------------------------------------------------------------------------- repeat_kv


_AXES = ("batch", "seq", "n_kv_heads", "head_dim")


@check
def repeat_kv(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(x, n_rep)`: (batch, seq, n_kv_heads, head_dim) -> (.., n_kv_heads * n_rep, ..)."""
    gen = torch.Generator().manual_seed(0)
    cases = [((2, 3, 2, 4), 2), ((1, 5, 3, 8), 3), ((2, 4, 1, 6), 4), ((3, 2, 4, 2), 1)]
    for shape, n_rep in cases:
        x = torch.randn(shape, generator=gen)
        x_in = x.clone()
        out = call(fn, x_in, n_rep)
        if not torch.equal(x_in, x):
            fail("your function changed x in place. Return a new tensor and leave x as it is.")
        label = f"x of shape {shape} and n_rep={n_rep}"
        if n_rep == 1:
            otherwise = "With n_rep = 1 there is nothing to repeat: return x unchanged."
        else:
            otherwise = (
                "Query head h uses kv head h // n_rep, so the heads axis must read "
                "0, 0, 1, 1, ... (torch.repeat_interleave(x, n_rep, dim=2))."
            )
        # Repeating copies values: float64 holds them exactly, so it is accepted too.
        if isinstance(out, torch.Tensor) and out.dtype not in (x.dtype, torch.float64):
            fail(f"with {label} the result has dtype {str(out.dtype)[6:]}; keep x's dtype.")
        match_mistakes(out, ref.repeat_kv(x, n_rep), _repeat_mistakes(x, n_rep), label, otherwise)
    return "repeats each kv head n_rep times in a row (0, 0, 1, 1, ...) on 4 inputs, n_rep 1 to 4"


def _repeat_mistakes(x: torch.Tensor, n_rep: int) -> list[Mistake]:
    """Typical wrong repeat_kv results on this input, each with the hint that names it."""
    batch, seq, n_kv_heads, head_dim = x.shape
    mistakes = [
        (
            x.repeat(1, 1, n_rep, 1),
            "the heads come out in the order 0, 1, 0, 1, ... (torch.repeat or tile copies the "
            "whole block of heads). Each kv head must be repeated n_rep times in a row, "
            "0, 0, 1, 1, ..., as torch.repeat_interleave(x, n_rep, dim=2) does: query heads "
            "h * n_rep .. h * n_rep + n_rep - 1 share kv head h.",
        ),
        (
            x[:, :, :, None].expand(batch, seq, n_kv_heads, n_rep, head_dim),
            "the result is 5-D: after expand, reshape it to "
            "(batch, seq, n_kv_heads * n_rep, head_dim).",
        ),
        (
            x[:, :, None].expand(batch, seq, n_rep, n_kv_heads, head_dim),
            "the result is 5-D: insert the new axis after the heads (x[:, :, :, None]), expand, "
            "then reshape to (batch, seq, n_kv_heads * n_rep, head_dim).",
        ),
    ]
    for axis in (0, 1, 3):
        message = (
            f"n_rep was applied to axis {axis} ({_AXES[axis]}). Repeat along axis 2, the "
            "n_kv_heads axis: torch.repeat_interleave(x, n_rep, dim=2)."
        )
        mistakes.append((x.repeat_interleave(n_rep, dim=axis), message))
        times = [1, 1, 1, 1]
        times[axis] = n_rep
        mistakes.append((x.repeat(*times), message))
    return mistakes


# --------------------------------------------------------------------------- helpers
