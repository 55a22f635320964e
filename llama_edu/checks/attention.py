"""Checks for the attention chapter: softmax, the mask, attention, repeat_kv, the whole module."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .. import attention as ref
from ..rope import rope_cos_sin
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


# --------------------------------------------------------------------------- attention module

_MODULE_DIM = 32
# (label, n_heads, n_kv_heads, batch, seq, use a causal mask)
_MODULE_CASES = [
    ("multi-head (4 heads, 4 kv heads), causal mask", 4, 4, 2, 5, True),
    ("grouped-query (4 heads, 2 kv heads), causal mask", 4, 2, 2, 5, True),
    ("one kv head (4 heads, 1 kv head), causal mask", 4, 1, 1, 6, True),
    ("grouped-query (8 heads, 2 kv heads), mask=None", 8, 2, 2, 4, False),
]
# (label, n_heads, n_kv_heads, layer): a prefill of 4 tokens, then 3 single-token steps
_CACHE_CASES = [
    ("grouped-query (4 heads, 2 kv heads), layer=1", 4, 2, 1),
    ("one kv head (4 heads, 1 kv head), layer=0", 4, 1, 0),
]
_PREFILL, _STEPS, _CACHE_LAYERS, _CACHE_LEN = 4, 3, 2, 8

_MODULE_RULE = (
    "Expected: q, k, v = wq(x), wk(x), wv(x) viewed as (batch, seq, heads, head_dim); q and k "
    "rotated with cos and sin; k and v stored in the cache at start_pos; each kv head shared by "
    "n_rep query heads in a row; softmax(q k^T / sqrt(head_dim) + mask) v; heads merged back to "
    "(batch, seq, dim); then wo."
)

_MODULE_MISTAKES = {
    "no_rope_k": "RoPE is applied to the queries but not to the keys. Rotate both q and k with "
    "cos and sin (rotate_pairs); only v stays unrotated.",
    "no_rope_q": "RoPE is applied to the keys but not to the queries. Rotate both q and k with "
    "cos and sin (rotate_pairs).",
    "no_rope": "RoPE is not applied: rotate q and k with cos and sin (rotate_pairs) after "
    "splitting the heads and before the scores.",
    "rope_v": "the values are rotated too. RoPE rotates only q and k; v stays as wv(x) gives it.",
    "rope_half": "RoPE pairs feature i with feature i + head_dim/2 (Hugging Face's rotate-half "
    "convention). Llama's pairs are neighbours (2i, 2i + 1), as rotate_pairs rotates them.",
    "split": "the heads are split by viewing (batch, seq, n_heads * head_dim) directly as "
    "(batch, n_heads, seq, head_dim), which mixes the tokens. View it as "
    "(batch, seq, n_heads, head_dim) first, then move the heads axis with transpose(1, 2).",
    "tile": "the kv heads are repeated in the order 0, 1, 0, 1, ... (repeat or tile). Query head "
    "h uses kv head h // n_rep, so the order is 0, 0, 1, 1, ...: use repeat_kv (or "
    "repeat_interleave on the heads axis).",
    "no_scale": "the scores are not scaled: divide q k^T by sqrt(head_dim) before the softmax.",
    "scale_d": "the scores are divided by head_dim; divide them by sqrt(head_dim).",
    "no_mask": "the mask is ignored: add it to the scores before the softmax (or pass it to "
    "scaled_dot_product_attention as attn_mask).",
    "self_causal": "with mask=None every query must see every key, but your module hides later "
    "keys by itself (is_causal=True or its own mask). Apply only the mask it is given.",
    "softmax_q": "the softmax runs over the queries axis. Each query's weights over the keys "
    "must sum to 1: softmax over the last axis.",
    "merge": "the heads are merged without moving the heads axis back: the attention output is "
    "(batch, n_heads, seq, head_dim); transpose it to (batch, seq, n_heads, head_dim) before "
    "reshaping to (batch, seq, dim).",
    "no_wo": "the output projection is missing: apply self.wo to the merged heads.",
}


def _rotated(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, half: bool) -> torch.Tensor:
    """t (b, s, heads, d) in float64, rotated by RoPE; `half` pairs i with i + d/2 instead."""
    c, s = cos.double()[:, None, :], sin.double()[:, None, :]
    if half:
        first, second = t.chunk(2, dim=-1)
        return torch.cat((first * c - second * s, first * s + second * c), dim=-1)
    even, odd = t[..., 0::2], t[..., 1::2]
    return torch.stack((even * c - odd * s, even * s + odd * c), dim=-1).flatten(-2)


def _module_kv(
    att: ref.Attention, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rotated keys, the unrotated keys and the values (b, s, kv_heads, d) of the reference."""
    b, s, _ = x.shape
    k = (x.double() @ att.wk.weight.double().T).view(b, s, att.n_kv_heads, att.head_dim)
    v = (x.double() @ att.wv.weight.double().T).view(b, s, att.n_kv_heads, att.head_dim)
    return _rotated(k, cos, sin, False), k, v


def _module_output(
    att: ref.Attention,
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    mask: torch.Tensor | None,
    mistake: str = "",
    past: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The module's output in float64, computed with one named mistake (or none).

    `past` holds keys and values (b, p, kv_heads, d) that come before x's own.
    """
    b, s, _ = x.shape
    heads, kv_heads, d = att.n_heads, att.n_kv_heads, att.head_dim
    w = {name: getattr(att, name).weight.detach().double() for name in ("wq", "wk", "wv", "wo")}

    def split(t: torch.Tensor, n: int) -> torch.Tensor:
        if mistake == "split":
            return t.view(b, n, s, d).transpose(1, 2)
        return t.view(b, s, n, d)

    x64 = x.double()
    q, k = split(x64 @ w["wq"].T, heads), split(x64 @ w["wk"].T, kv_heads)
    v = split(x64 @ w["wv"].T, kv_heads)
    half = mistake == "rope_half"
    if mistake not in ("no_rope", "no_rope_q"):
        q = _rotated(q, cos, sin, half)
    if mistake not in ("no_rope", "no_rope_k"):
        k = _rotated(k, cos, sin, half)
    if mistake == "rope_v":
        v = _rotated(v, cos, sin, False)
    if past is not None:
        k, v = torch.cat((past[0], k), dim=1), torch.cat((past[1], v), dim=1)
    n_rep = heads // kv_heads
    if mistake == "tile":
        k, v = k.repeat(1, 1, n_rep, 1), v.repeat(1, 1, n_rep, 1)
    else:
        k, v = k.repeat_interleave(n_rep, dim=2), v.repeat_interleave(n_rep, dim=2)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (b, heads, s or kv, d)
    scores = q @ k.transpose(-2, -1)
    if mistake != "no_scale":
        scores = scores / (d if mistake == "scale_d" else math.sqrt(d))
    if mask is not None and mistake != "no_mask":
        scores = scores + mask.double()
    if mistake == "self_causal":
        scores = scores + ref.causal_mask(s, k.shape[2] - s, dtype=torch.float64)
    out = torch.softmax(scores, dim=-2 if mistake == "softmax_q" else -1) @ v
    merged = out.reshape(b, s, -1) if mistake == "merge" else out.transpose(1, 2).reshape(b, s, -1)
    return merged if mistake == "no_wo" else merged @ w["wo"].T


def _random_attention(n_heads: int, n_kv_heads: int, seed: int) -> ref.Attention:
    """A library Attention with random weights of order one (so that scores are not all 0)."""
    att = ref.Attention(_MODULE_DIM, n_heads, n_kv_heads)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in att.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
    return att.eval()


def _learner_module(cls: Callable[..., nn.Module], att: ref.Attention) -> nn.Module:
    """Build cls(dim, n_heads, n_kv_heads), check its four projections, load att's weights."""
    module = call(cls, _MODULE_DIM, att.n_heads, att.n_kv_heads)
    if not isinstance(module, nn.Module):
        fail(
            f"cls({_MODULE_DIM}, {att.n_heads}, {att.n_kv_heads}) returned a "
            f"{type(module).__name__}; expected an nn.Module. Subclass nn.Module and call "
            "super().__init__() first."
        )
    shapes = {name: tuple(getattr(att, name).weight.shape) for name in ("wq", "wk", "wv", "wo")}
    for name, shape in shapes.items():
        layer = getattr(module, name, None)
        if not isinstance(layer, nn.Linear):
            fail(
                f"the module needs an attribute {name} that is an nn.Linear, but it has "
                f"{type(layer).__name__}. Create it in __init__: "
                f"self.{name} = nn.Linear(in_features, out_features, bias=False)."
            )
        if layer.bias is not None:
            fail(f"self.{name} has a bias; Llama's projections have none: pass bias=False.")
        if tuple(layer.weight.shape) != shape:
            fail(
                f"with dim={_MODULE_DIM}, n_heads={att.n_heads}, n_kv_heads={att.n_kv_heads}, "
                f"self.{name}.weight has shape {tuple(layer.weight.shape)}; expected {shape} "
                "(out_features, in_features). wq makes n_heads * head_dim features, wk and wv "
                "make n_kv_heads * head_dim, and wo maps n_heads * head_dim back to dim."
            )
        with torch.no_grad():
            layer.weight.copy_(getattr(att, name).weight)
    return module


def _same_inputs(originals: list[torch.Tensor], passed: list[torch.Tensor]) -> None:
    if any(not torch.equal(a, b) for a, b in zip(originals, passed, strict=True)):
        fail(
            "your forward changed x, cos, sin or the mask in place (e.g. with +=). Compute new "
            "tensors and leave the inputs as they are."
        )


@check
def attention_module(cls: Callable[..., nn.Module]) -> str:
    """Check `cls(dim, n_heads, n_kv_heads)`: Llama's attention module with RoPE, GQA, a cache."""
    gen = torch.Generator().manual_seed(0)
    for seed, (label, n_heads, n_kv_heads, batch, seq, masked) in enumerate(_MODULE_CASES):
        att = _random_attention(n_heads, n_kv_heads, seed)
        module = _learner_module(cls, att)
        x = torch.randn(batch, seq, _MODULE_DIM, generator=gen)
        cos, sin = rope_cos_sin(att.head_dim, seq)
        mask = ref.causal_mask(seq) if masked else None
        inputs = [x, cos, sin] + ([] if mask is None else [mask])
        passed = [t.clone() for t in inputs]
        with torch.no_grad():
            expected = att(x, cos, sin, mask)
            out = call(module, *passed[:3], passed[3] if masked else None)
        _same_inputs(inputs, passed)
        out = expect_tensor(out, tuple(x.shape), "the module's output")
        mistakes = [
            (_module_output(att, x, cos, sin, mask, mistake), message)
            for mistake, message in _MODULE_MISTAKES.items()
        ]
        match_mistakes(
            out, expected, mistakes, f"{label}, x {tuple(x.shape)}", _MODULE_RULE,
            what="llama_edu's Attention with the same weights",
        )  # fmt: skip
    for seed, (label, n_heads, n_kv_heads, layer) in enumerate(_CACHE_CASES, start=10):
        _check_cached(cls, label, n_heads, n_kv_heads, layer, seed, gen)
    return (
        "equals llama_edu's Attention with the same weights for 4, 2 and 1 kv heads, with and "
        "without a mask, and for a prefill plus 3 cached one-token steps (layers 0 and 1)"
    )


def _check_cached(
    cls: Callable[..., nn.Module],
    label: str,
    n_heads: int,
    n_kv_heads: int,
    layer: int,
    seed: int,
    gen: torch.Generator,
) -> None:
    """A prefill, then one-token steps with a KVCache, against one full forward pass."""
    att = _random_attention(n_heads, n_kv_heads, seed)
    module = _learner_module(cls, att)
    batch, total, d = 2, _PREFILL + _STEPS, att.head_dim
    x = torch.randn(batch, total, _MODULE_DIM, generator=gen)
    cos, sin = rope_cos_sin(d, total)
    cache = ref.KVCache(_CACHE_LAYERS, batch, _CACHE_LEN, n_kv_heads, d)
    with torch.no_grad():
        expected = att(x, cos, sin, ref.causal_mask(total))
        keys, raw_keys, values = _module_kv(att, x, cos, sin)
        prefill = call(
            module, x[:, :_PREFILL], cos[:_PREFILL], sin[:_PREFILL],
            ref.causal_mask(_PREFILL), cache=cache, layer=layer, start_pos=0,
        )  # fmt: skip
    where = f"with {label}, a prefill of {_PREFILL} tokens (start_pos=0)"
    prefill = expect_tensor(prefill, (batch, _PREFILL, _MODULE_DIM), "the prefill's output")
    _check_cache_contents(cache, layer, keys, raw_keys, values, _PREFILL, where)
    if not close(prefill, expected[:, :_PREFILL]):
        fail(f"{where}: the output differs from the same tokens without a cache. {_MODULE_RULE}")
    for pos in range(_PREFILL, total):
        step_where = f"with {label}, the one-token step at start_pos={pos}"
        before = cache.k[layer, :, 0].clone()
        with torch.no_grad():
            out = call(
                module, x[:, pos : pos + 1], cos[pos : pos + 1], sin[pos : pos + 1], None,
                cache=cache, layer=layer, start_pos=pos,
            )  # fmt: skip
        out = expect_tensor(out, (batch, 1, _MODULE_DIM), "the step's output")
        new_key = cache.k[layer, :, pos].double()
        if not close(new_key, keys[:, pos]) and close(cache.k[layer, :, 0], keys[:, pos]):
            fail(
                f"{step_where}: the new key was written at position 0, over the first token's "
                "key: start_pos is ignored. Store k and v at positions start_pos .. "
                "start_pos + seq - 1 (cache.store(layer, start_pos, k, v))."
            )
        if not torch.equal(cache.k[layer, :, 0], before):
            fail(f"{step_where}: the step changed the cached key of position 0. {_MODULE_RULE}")
        _check_cache_contents(cache, layer, keys, raw_keys, values, pos + 1, step_where)
        if close(out, expected[:, pos : pos + 1]):
            continue
        alone = _module_output(
            att, x[:, pos : pos + 1], cos[pos : pos + 1], sin[pos : pos + 1], None
        )
        if close(out, alone):
            fail(
                f"{step_where}: the new token attends only to itself, so the cached keys and "
                "values are not used. Attend over all keys and values that cache.store returns "
                "(positions 0 .. start_pos)."
            )
        empty = torch.zeros(batch, _CACHE_LEN - pos - 1, n_kv_heads, d, dtype=torch.float64)
        past = (torch.cat((keys[:, :pos], empty), 1), torch.cat((values[:, :pos], empty), 1))
        whole = _module_output(att, x[:, pos : pos + 1], cos[pos : pos + 1], sin[pos : pos + 1],
                               None, past=past)  # fmt: skip
        if close(out, whole):
            fail(
                f"{step_where}: the new token attends over the whole cache, empty positions "
                "included. Use only positions 0 .. start_pos + seq - 1 (what cache.store "
                "returns)."
            )
        fail(
            f"{step_where}: the output differs from the same token in one full forward pass. "
            f"{_MODULE_RULE}"
        )


def _check_cache_contents(
    cache: ref.KVCache,
    layer: int,
    keys: torch.Tensor,
    raw_keys: torch.Tensor,
    values: torch.Tensor,
    end: int,
    where: str,
) -> None:
    """Fail, naming the mistake, unless the cache's `layer` holds keys and values 0 .. end - 1."""
    held_k, held_v = cache.k[layer, :, :end].double(), cache.v[layer, :, :end].double()
    if close(held_k, keys[:, :end]) and close(held_v, values[:, :end]):
        return
    if not cache.k.any() and not cache.v.any():
        fail(
            f"{where}: the cache is still empty, so it is not used. Store the rotated keys and "
            "the values with k, v = cache.store(layer, start_pos, k, v) and attend over what it "
            "returns."
        )
    if not cache.k[layer].any():
        fail(
            f"{where}: nothing was stored in layer {layer} of the cache, but another layer was "
            "written: the `layer` argument is ignored. Pass it to cache.store(layer, ...)."
        )
    if close(held_k, raw_keys[:, :end]):
        fail(
            f"{where}: the cache holds the keys before RoPE. Rotate k first, then store it, so "
            "that every cached key keeps the rotation of its own position."
        )
    fail(
        f"{where}: the cache does not hold the keys and values of positions 0 .. {end - 1} "
        "(shape (batch, seq, n_kv_heads, head_dim), keys rotated, values as wv gives them)."
    )
