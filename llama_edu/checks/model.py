"""Checks for the full-model chapter: the pre-norm residual block and the parameter count."""

from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Callable

import torch

from .. import model as ref
from ..attention import causal_mask
from ..rope import rope_cos_sin
from ._core import _Failure, call, check, close, expect_tensor, fail

# --------------------------------------------------------------------------- transformer block

_BLOCK_RULE = (
    "The pre-norm block is: h = x + block.attention(block.attention_norm(x), cos, sin, mask), "
    "then out = h + block.feed_forward(block.ffn_norm(h))."
)

# (label, ModelArgs fields, batch, seq, use a causal mask)
_BLOCK_CASES = [
    ("grouped-query heads, causal mask", {"n_heads": 4, "n_kv_heads": 2}, 2, 5, True),
    ("one head per kv head, no mask", {"n_heads": 4}, 1, 6, False),
    ("a single new token, no mask", {"n_heads": 2, "n_kv_heads": 1}, 3, 1, False),
    ("eight heads, causal mask", {"n_heads": 8, "n_kv_heads": 2}, 2, 7, True),
]


def _random_block(fields: dict[str, int], seed: int) -> ref.TransformerBlock:
    """A TransformerBlock whose weights, norm gains included, are random and of order one."""
    args = ref.ModelArgs(dim=32, n_layers=1, vocab_size=8, multiple_of=16, **fields)
    gen = torch.Generator().manual_seed(seed)
    block = ref.TransformerBlock(0, args)
    with torch.no_grad():
        for name, p in block.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("norm.weight"):  # distinct gains make the two norms tell apart
                p.copy_(1.0 + 0.5 * noise)
            else:
                p.copy_(noise / p.shape[-1] ** 0.5)
    return block.eval()


class _WholeBlockCalled(Exception):
    """Raised when the candidate calls the block it should assemble."""


def _refuse_whole_block(*args: object, **kwargs: object) -> None:
    raise _WholeBlockCalled("block.forward is switched off in this check")


@check
def transformer_block(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(x, block, cos, sin, mask) -> Tensor` against Llama's pre-norm residual block."""
    gen = torch.Generator().manual_seed(0)
    for seed, (label, fields, batch, seq, masked) in enumerate(_BLOCK_CASES):
        block = _random_block(fields, seed)
        cos, sin = rope_cos_sin(block.attention.head_dim, seq)
        mask = causal_mask(seq) if masked else None
        x = torch.randn(batch, seq, 32, generator=gen)
        with torch.no_grad():
            expected, _ = block(x, cos, sin, mask)
            mistakes = _block_mistakes(x, block, cos, sin, mask)
            state = {k: v.clone() for k, v in block.state_dict().items()}
            block.forward = _refuse_whole_block  # type: ignore[method-assign]
            x_in = x.clone()
            try:
                out = call(fn, x_in, block, cos, sin, mask)
            except _Failure as failure:
                if isinstance(failure.__cause__, _WholeBlockCalled):
                    fail(
                        "your function called the block itself (block(x, ...)). Build the "
                        "output from its parts: block.attention_norm, block.attention, "
                        "block.ffn_norm and block.feed_forward."
                    )
                raise
        if not torch.equal(x_in, x):
            fail(
                "your function changed x in place (e.g. with x += ...). Write h = x + ... so "
                "that x stays as it is."
            )
        if any(not torch.equal(v, block.state_dict()[k]) for k, v in state.items()):
            fail("your function changed the block's weights. Only read them.")
        if isinstance(out, tuple):
            fail(
                "your function returned a tuple; return only the output tensor of shape "
                "(batch, seq, dim)."
            )
        where = f"with {label} (x of shape {tuple(x.shape)})"
        out = expect_tensor(out, tuple(x.shape), "the block's output")
        if close(out, expected):
            continue
        for wrong, message in mistakes:
            if close(out, wrong):
                fail(f"{where}: {message}")
        fail(f"{where} the output differs from the reference. {_BLOCK_RULE}")
    return (
        "equals x + attention(norm(x)), then h + feed_forward(norm(h)) on 4 blocks "
        "(grouped-query and full heads, with and without a mask, one token)"
    )


def _block_mistakes(
    x: torch.Tensor,
    block: ref.TransformerBlock,
    cos: torch.Tensor,
    sin: torch.Tensor,
    mask: torch.Tensor | None,
) -> list[tuple[torch.Tensor, str]]:
    """Typical wrong blocks on this input, each with the hint that names it."""
    attn_norm, ffn_norm = block.attention_norm, block.ffn_norm

    def attn(h: torch.Tensor, m: torch.Tensor | None = mask) -> torch.Tensor:
        return block.attention(h, cos, sin, m)

    ff = block.feed_forward
    h = x + attn(attn_norm(x))
    post_h = attn_norm(x + attn(x))
    mistakes = [
        (
            ffn_norm(post_h + ff(post_h)),
            "this is a post-norm block, norm(x + sublayer(x)), as in the original Transformer. "
            "Llama normalises the input of each sub-layer and adds the sub-layer's output to "
            "the un-normalised x: h = x + attention(attention_norm(x)).",
        ),
        (
            attn_norm(x + attn(x)) + ff(ffn_norm(attn_norm(x + attn(x)))),
            "the first norm comes after the residual add (post-norm). Normalise the input of "
            "the attention instead: h = x + attention(attention_norm(x)).",
        ),
        (
            ffn_norm(h + ff(h)),
            "the second norm comes after the residual add (post-norm). Normalise the input of "
            "the feed-forward instead: out = h + feed_forward(ffn_norm(h)).",
        ),
        (
            attn(attn_norm(x)) + ff(ffn_norm(attn(attn_norm(x)))),
            "the residual connection around the attention is missing: h = x + attention(...), "
            "not h = attention(...).",
        ),
        (
            ff(ffn_norm(h)),
            "the residual connection around the feed-forward is missing: return "
            "h + feed_forward(ffn_norm(h)), not feed_forward(...) alone.",
        ),
        (
            ff(ffn_norm(attn(attn_norm(x)))),
            "both residual connections are missing: add each sub-layer's output to its input "
            "(h = x + ..., out = h + ...).",
        ),
        (
            h + ff(attn_norm(h)),
            "block.attention_norm is used for both sub-layers. The feed-forward has its own "
            "norm with its own weights: block.ffn_norm(h).",
        ),
        (
            x + attn(ffn_norm(x)) + ff(ffn_norm(x + attn(ffn_norm(x)))),
            "block.ffn_norm is used for both sub-layers. The attention has its own norm: "
            "block.attention_norm(x).",
        ),
        (
            x + attn(ffn_norm(x)) + ff(attn_norm(x + attn(ffn_norm(x)))),
            "the two norms are swapped: attention_norm goes before the attention, ffn_norm "
            "before the feed-forward.",
        ),
        (
            h + ff(ffn_norm(x)),
            "the feed-forward is applied to x instead of h. It must see the output of the "
            "attention step: out = h + feed_forward(ffn_norm(h)) with h = x + attention(...).",
        ),
        (
            x + ff(ffn_norm(x)),
            "the attention is missing, or its output is not carried on: the feed-forward must "
            "read h = x + attention(attention_norm(x)).",
        ),
        (
            h + ff(h),
            "the feed-forward reads h without its norm: out = h + feed_forward(ffn_norm(h)).",
        ),
        (
            x + attn(x) + ff(x + attn(x)),
            "the norms are missing. Normalise the input of each sub-layer: "
            "attention_norm(x) before the attention, ffn_norm(h) before the feed-forward.",
        ),
        (
            x + attn(x) + ff(ffn_norm(x + attn(x))),
            "the attention reads x without its norm: h = x + attention(attention_norm(x)).",
        ),
        (
            h,
            "the feed-forward step is missing: after h = x + attention(...), return "
            "h + feed_forward(ffn_norm(h)).",
        ),
    ]
    if mask is not None:
        h_free = x + attn(attn_norm(x), None)
        mistakes.append(
            (
                h_free + ff(ffn_norm(h_free)),
                "the mask is not passed to the attention, so every token sees later tokens. "
                "Call block.attention(h, cos, sin, mask).",
            )
        )
    return mistakes


# --------------------------------------------------------------------------- parameter count

# Real presets first (the order in which a wrong answer shows up), then small ones.
_COUNT_PRESETS = ["llama2-7b", "llama2-13b", "llama3-8b", "llama2-70b", "llama3.2-1b", "tiny"]
_COUNT_EXTRA = [
    ref.ModelArgs(dim=64, n_layers=3, n_heads=4, n_kv_heads=1, vocab_size=100, multiple_of=32),
    ref.ModelArgs(
        dim=96,
        n_layers=2,
        n_heads=6,
        n_kv_heads=3,
        vocab_size=250,
        multiple_of=64,
        ffn_dim_multiplier=1.3,
        tie_embeddings=True,
    ),
]


def _count(
    args: ref.ModelArgs,
    *,
    kv_heads: int | None = None,
    hidden: int | None = None,
    ffn_matrices: int = 3,
    output: str = "normal",
    norms_per_layer: int = 2,
    final_norm: bool = True,
    biases: bool = False,
) -> int:
    """The parameter count by formula, with knobs that reproduce typical mistakes."""
    d, n_layers, vocab = args.dim, args.n_layers, args.vocab_size
    kv = args.kv_heads if kv_heads is None else kv_heads
    q_width, kv_width = args.n_heads * args.head_dim, kv * args.head_dim
    h = args.hidden_dim if hidden is None else hidden
    attention = d * q_width + 2 * d * kv_width + q_width * d
    ffn = ffn_matrices * d * h
    if biases:
        attention += q_width + 2 * kv_width + d
        ffn += (ffn_matrices - 1) * h + d
    per_layer = attention + ffn + norms_per_layer * d
    untied_output = {"normal": not args.tie_embeddings, "always": True, "never": False}[output]
    embeddings = vocab * d * (2 if untied_output else 1)
    return embeddings + n_layers * per_layer + (d if final_norm else 0)


def _count_mistakes(args: ref.ModelArgs) -> list[tuple[int, str]]:
    """Typical wrong totals for this configuration, each with the hint that names it."""
    d = args.dim
    plain_hidden = int(2 * 4 * d / 3)
    return [
        (
            _count(args, kv_heads=args.n_heads),
            "wk and wv are counted as dim x dim, but with grouped-query attention they are "
            "dim x (n_kv_heads * head_dim). Use args.kv_heads (n_kv_heads, or n_heads when it "
            "is None).",
        ),
        (
            _count(args, output="always"),
            "tied embeddings are counted twice. With tie_embeddings=True the output layer "
            "reuses the embedding matrix, so vocab_size * dim counts once.",
        ),
        (
            _count(args, output="never"),
            "the output layer is missing: without tied embeddings it is a second "
            "vocab_size x dim matrix.",
        ),
        (
            _count(args, norms_per_layer=0, final_norm=False),
            "the RMSNorm weights are missing: each layer has two norms of dim weights, and "
            "there is one final norm, (2 * n_layers + 1) * dim in all.",
        ),
        (
            _count(args, final_norm=False),
            "the final norm is missing: after the last layer one more RMSNorm has dim weights.",
        ),
        (
            _count(args, norms_per_layer=1),
            "each layer has two norms (attention_norm and ffn_norm), dim weights each; you "
            "counted one.",
        ),
        (
            _count(args, norms_per_layer=0),
            "the per-layer norms are missing: each layer has attention_norm and ffn_norm, "
            "dim weights each.",
        ),
        (
            _count(args, hidden=4 * d),
            "the feed-forward hidden size is 4 * dim. Llama uses args.hidden_dim "
            "(ffn_hidden_dim: 2/3 of 4 * dim, times ffn_dim_multiplier, rounded up to "
            "multiple_of).",
        ),
        (
            _count(args, hidden=plain_hidden),
            "the hidden size is int(8 * dim / 3) without the multiplier and the rounding. "
            "Use args.hidden_dim, which applies ffn_dim_multiplier and rounds up to multiple_of.",
        ),
        (
            _count(args, ffn_matrices=2),
            "the feed-forward has three matrices (w1, w2, w3), 3 * dim * hidden_dim, not two.",
        ),
        (
            _count(args, biases=True),
            "you counted biases, but Llama's linear layers have none (bias=False).",
        ),
    ]


def _count_configs() -> list[tuple[ref.ModelArgs, str]]:
    configs = [(ref.ModelArgs.from_name(name), name) for name in _COUNT_PRESETS]
    return configs + [(args, f"ModelArgs(dim={args.dim}, ...)") for args in _COUNT_EXTRA]


@functools.cache
def _expected_count(index: int) -> int:
    """The reference count of config `index`, built once on the meta device and remembered."""
    count = ref.count_params(_count_configs()[index][0])
    assert isinstance(count, int)
    return count


@check
def count_params(fn: Callable[..., int]) -> str:
    """Check `fn(args: ModelArgs) -> int` against the parameter count of the built model."""
    configs = _count_configs()
    for index, (args, name) in enumerate(configs):
        out = call(fn, dataclasses.replace(args))
        expected = _expected_count(index)
        label = f"{name} (n_kv_heads={args.n_kv_heads}, tie_embeddings={args.tie_embeddings})"
        if isinstance(out, torch.Tensor) and out.numel() == 1:
            fail(f"for {label} you returned a tensor; return a Python int (use int(...)).")
        if isinstance(out, float):
            if out == expected:
                fail(f"for {label} you returned the float {out!r}; return an int (use //).")
        elif not isinstance(out, numbers.Integral) or isinstance(out, bool):
            fail(f"for {label} the result should be an int, but it is {type(out).__name__}.")
        elif out == expected:
            continue
        for wrong, message in _count_mistakes(args):
            if wrong != expected and out == wrong:
                fail(f"for {label} you returned {out:,}, expected {expected:,}: {message}")
        parts = ref.count_params(args, breakdown=True)
        assert isinstance(parts, dict)
        shown = ", ".join(f"{k} {v:,}" for k, v in parts.items() if k != "total")
        fail(
            f"for {label} you returned {out!r}, expected {expected:,} ({shown}). Per layer: "
            "attention 2 * dim * dim + 2 * dim * (n_kv_heads * head_dim), feed-forward "
            "3 * dim * hidden_dim, two norms of dim each."
        )
    return (
        f"matches the built model on {len(configs)} configs (Llama 2 7B/13B/70B, Llama 3 8B, "
        "tied Llama 3.2 1B, tiny, small GQA and tied ones)"
    )
