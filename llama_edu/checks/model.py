"""Checks for the full-model chapter: the pre-norm block, the whole model, the parameter count."""

from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Callable

import torch

from .. import model as ref
from ..attention import KVCache, causal_mask
from ..rope import rope_cos_sin
from ._core import _Failure, call, check, close, expect_tensor, fail, match_mistakes

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
        where = f"{label} (x of shape {tuple(x.shape)})"  # ends in text: a catalog key can match
        out = expect_tensor(out, tuple(x.shape), "the block's output")
        if close(out, expected):
            continue
        for wrong, message in mistakes:
            if close(out, wrong):
                fail(f"with {where}: {message}")
        fail(f"with {where} the output differs from the reference. {_BLOCK_RULE}")
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


# --------------------------------------------------------------------------- the whole model

_LLAMA3_SMALL_SCALING = {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}

# (label, ModelArgs fields); every model is small, so the whole check runs in about a second
_MODEL_CASES = [
    ("multi-head attention (n_kv_heads=None)", {"n_heads": 4}),
    ("grouped-query attention (8 heads, 2 kv heads)", {"n_heads": 8, "n_kv_heads": 2}),
    (
        "tied embeddings (4 heads, 1 kv head)",
        {"n_heads": 4, "n_kv_heads": 1, "tie_embeddings": True},
    ),
    (
        "Llama 3 RoPE (rope_theta=500000, rope_scaling)",
        {
            "n_heads": 4,
            "n_kv_heads": 2,
            "rope_theta": 500000.0,
            "rope_scaling": _LLAMA3_SMALL_SCALING,
        },
    ),
]
_BATCH, _SEQ = 2, 10
# the cached decode: a prefill of 5 tokens, a chunk of 3, then two single tokens
_DECODE_STEPS = [(0, 5), (5, 8), (8, 9), (9, 10)]

_MODEL_RULE = (
    "The model is: h = tok_embeddings(tokens); for each block h = h + attention(attention_norm(h), "
    "cos, sin, mask, cache, layer, start_pos), then h = h + feed_forward(ffn_norm(h)); logits = "
    "output(norm(h))."
)


def _model_args(fields: dict[str, object]) -> ref.ModelArgs:
    return ref.ModelArgs(
        dim=32, n_layers=2, vocab_size=64, multiple_of=16, max_seq_len=32, **fields
    )  # type: ignore[arg-type]


def _random_llama(args: ref.ModelArgs, seed: int) -> ref.Llama:
    """A library Llama whose weights, norm gains included, are random and of order one."""
    gen = torch.Generator().manual_seed(seed)
    model = ref.Llama(args)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.5 * noise)
            else:
                p.copy_(noise / p.shape[-1] ** 0.5)
    return model.eval()


def _variant(
    model: ref.Llama,
    tokens: torch.Tensor,
    cache: KVCache | None = None,
    *,
    pre_norm: bool = True,
    residual: bool = True,
    final_norm: bool = True,
    masked: bool = True,
    mask_with_cache: bool = True,
    tables: tuple[torch.Tensor, torch.Tensor] | None = None,
    offset: bool = True,
    use_cache: bool = True,
    embed_scale: float = 1.0,
) -> torch.Tensor:
    """The library model's forward pass with knobs that reproduce typical mistakes."""
    start = 0 if cache is None else cache.length
    seq = tokens.shape[1]
    cos_table, sin_table = (model.rope_cos, model.rope_sin) if tables is None else tables
    first = start if offset else 0
    cos, sin = cos_table[first : first + seq], sin_table[first : first + seq]
    mask = causal_mask(seq, start if use_cache else 0) if seq > 1 else None
    if not masked or (cache is not None and not mask_with_cache):
        mask = None
    h = model.tok_embeddings(tokens) * embed_scale
    for i, layer in enumerate(model.layers):

        def attend(
            v: torch.Tensor, layer: ref.TransformerBlock = layer, i: int = i
        ) -> torch.Tensor:
            return layer.attention(v, cos, sin, mask, cache if use_cache else None, i, start)

        if pre_norm:
            a = attend(layer.attention_norm(h))
            h = h + a if residual else a
            f = layer.feed_forward(layer.ffn_norm(h))
            h = h + f if residual else f
        else:
            h = layer.attention_norm(h + attend(h))
            h = layer.ffn_norm(h + layer.feed_forward(h))
    if cache is not None:
        cache.length = start + seq
    return model.output(model.norm(h) if final_norm else h).float()


def _full_mistakes(model: ref.Llama, tokens: torch.Tensor) -> list[tuple[torch.Tensor, str]]:
    """Typical wrong logits of a whole forward pass (no cache), each with its message."""
    args = model.args
    mistakes = [
        (
            _variant(model, tokens, pre_norm=False),
            "this is a post-norm model, norm(h + sublayer(h)), as in the original Transformer. "
            "Llama normalises the input of each sub-layer and adds the result to the "
            "un-normalised stream (pre-norm): h = h + attention(attention_norm(h), ...).",
        ),
        (
            _variant(model, tokens, residual=False),
            "the residual connections are missing: each block must add its sub-layers' outputs "
            "to the stream, h = h + attention(...), then h = h + feed_forward(...).",
        ),
        (
            _variant(model, tokens, final_norm=False),
            "the final norm is missing: the output layer reads norm(h), the model's last "
            "RMSNorm (self.norm), not h itself.",
        ),
        (
            _variant(model, tokens, masked=False),
            "there is no causal mask, so every position sees the later tokens. Pass "
            "causal_mask(seq, start_pos) to every block's attention when seq > 1.",
        ),
        (
            _variant(model, tokens, embed_scale=args.dim**0.5),
            "the embeddings are multiplied by sqrt(dim), as in the original Transformer. "
            "Llama feeds tok_embeddings(tokens) to the first block as it is.",
        ),
        (
            _variant(
                model,
                tokens,
                tables=(torch.ones_like(model.rope_cos), torch.zeros_like(model.rope_sin)),
            ),
            "the positions are ignored: the RoPE tables rotate by angle 0 (cos 1, sin 0). Make "
            "them with rope_cos_sin(args.head_dim, args.max_seq_len, args.rope_theta, "
            "scaling=args.rope_scaling).",
        ),
    ]
    if args.rope_theta != 10000.0:
        mistakes.append(
            (
                _variant(
                    model,
                    tokens,
                    tables=rope_cos_sin(
                        args.head_dim, args.max_seq_len, 10000.0, scaling=args.rope_scaling
                    ),
                ),
                f"the RoPE tables use theta = 10000, but this model has rope_theta = "
                f"{args.rope_theta:g}. Pass args.rope_theta to rope_cos_sin.",
            )
        )
    if args.rope_scaling is not None:
        mistakes.append(
            (
                _variant(
                    model,
                    tokens,
                    tables=rope_cos_sin(args.head_dim, args.max_seq_len, args.rope_theta),
                ),
                "the RoPE tables ignore args.rope_scaling (Llama 3.1's frequency scaling). "
                "Pass scaling=args.rope_scaling to rope_cos_sin.",
            )
        )
    return mistakes


def _decode(
    step: Callable[[torch.Tensor, KVCache], torch.Tensor],
    tokens: torch.Tensor,
    cache: KVCache,
) -> torch.Tensor:
    """Run the decode schedule with one cache and join the logits of every step."""
    return torch.cat([step(tokens[:, a:b], cache) for a, b in _DECODE_STEPS], dim=1)


def _decode_mistakes(model: ref.Llama, tokens: torch.Tensor) -> list[tuple[torch.Tensor, str]]:
    """Typical wrong logits of the cached decode schedule, each with its message."""

    def run(**knobs: bool) -> torch.Tensor:
        cache = model.init_cache(tokens.shape[0], model.args.max_seq_len)
        return _decode(lambda t, c: _variant(model, t, c, **knobs), tokens, cache)

    return [
        (
            run(offset=False),
            "the RoPE positions are not offset by start_pos: with a cache, the new tokens sit "
            "at positions start_pos .. start_pos + seq - 1, so slice the tables as "
            "rope_cos[start_pos : start_pos + seq].",
        ),
        (
            run(use_cache=False),
            "the cache is not passed to the attention layers, so each call sees only its own "
            "tokens. Call attention(x, cos, sin, mask, cache, layer_index, start_pos).",
        ),
        (
            run(mask_with_cache=False),
            "with a cache the mask is left out, but a prompt or a chunk of several new tokens "
            "still needs one: causal_mask(seq, start_pos), of shape (seq, start_pos + seq).",
        ),
    ]


def _build(cls: Callable[..., torch.nn.Module], args: ref.ModelArgs) -> torch.nn.Module:
    """Build the candidate model and load nothing yet; fail clearly if it is not a Module."""
    model = call(cls, dataclasses.replace(args))
    if not isinstance(model, torch.nn.Module):
        fail(
            f"cls(args) should build an nn.Module, but it returned {type(model).__name__}. "
            "Pass the class itself: checks.llama_model(MyLlama)."
        )
    return model


def _same_keys(model: torch.nn.Module, reference: ref.Llama, label: str) -> None:
    """Fail, naming the missing and extra keys, unless the state dicts have the same keys."""
    theirs, ours = set(model.state_dict()), set(reference.state_dict())
    if theirs == ours:
        return
    missing, extra = sorted(ours - theirs), sorted(theirs - ours)

    def show(keys: list[str]) -> str:
        return ", ".join(keys[:4]) + (f" (and {len(keys) - 4} more)" if len(keys) > 4 else "")

    parts = []
    if missing:
        parts.append(f"missing {len(missing)}: {show(missing)}")
    if extra:
        parts.append(f"extra {len(extra)}: {show(extra)}")
    advice = (
        "Use the attribute names of llama_edu.model.Llama: tok_embeddings, layers (an "
        "nn.ModuleList of blocks with attention, feed_forward, attention_norm and ffn_norm), "
        "norm and output."
    )
    if any("rope" in key or "freqs" in key or "mask" in key for key in extra):
        # one message with the sentence written out, so that the catalog can translate it whole
        fail(
            f"with {label} your model's state dict has other keys than llama_edu.model.Llama's "
            f"({'; '.join(parts)}). {advice} Tables that are not weights (RoPE cos/sin, a mask) "
            "must not be saved: register them with register_buffer(name, tensor, "
            "persistent=False)."
        )
    fail(
        f"with {label} your model's state dict has other keys than llama_edu.model.Llama's "
        f"({'; '.join(parts)}). {advice}"
    )


def _tied(model: torch.nn.Module) -> bool:
    state = model.state_dict(keep_vars=True)
    return state["output.weight"] is state["tok_embeddings.weight"]


@check
def llama_model(cls: Callable[..., torch.nn.Module]) -> str:
    """Check `cls(args)` with `forward(tokens, cache=None)` against llama_edu.model.Llama."""
    gen = torch.Generator().manual_seed(0)
    for seed, (label, fields) in enumerate(_MODEL_CASES):
        args = _model_args(fields)
        reference = _random_llama(args, seed)
        model = _build(cls, args)
        _same_keys(model, reference, label)
        if args.tie_embeddings and not _tied(model):
            fail(
                f"with {label}: args.tie_embeddings is True, but output.weight and "
                "tok_embeddings.weight are two separate tensors. Tie them: "
                "make the output layer's weight the embedding's weight (one Parameter)."
            )
        if not args.tie_embeddings and _tied(model):
            fail(
                f"with {label}: args.tie_embeddings is False, but output.weight is "
                "tok_embeddings.weight. Tie them only when args.tie_embeddings is True."
            )
        try:
            model.load_state_dict(reference.state_dict())
        except RuntimeError as exc:
            fail(
                f"with {label} the library model's weights do not load into yours: {exc}. "
                "Build the parts with the sizes of ModelArgs (args.kv_heads, args.hidden_dim)."
            )
        model.eval()
        tokens = torch.randint(0, args.vocab_size, (_BATCH, _SEQ), generator=gen)
        where = f"{label}, tokens of shape {tuple(tokens.shape)}"
        with torch.no_grad():
            expected = reference(tokens)
            out = call(model, tokens)
            out = expect_tensor(out, tuple(expected.shape), "the logits")
            if not close(out, expected):  # the typical mistakes are only worked out when needed
                match_mistakes(out, expected, _full_mistakes(reference, tokens), where, _MODEL_RULE)
            _check_causal(model, tokens, args, where)
            _check_decode(model, reference, tokens, args, label)
    return (
        "same logits as llama_edu's Llama (multi-head, grouped-query, tied embeddings, "
        "Llama 3 RoPE), causal, and a cached decode equals the full forward"
    )


def _check_causal(
    model: torch.nn.Module, tokens: torch.Tensor, args: ref.ModelArgs, where: str
) -> None:
    """Fail when changing a later token changes an earlier position's logits."""
    t = _SEQ // 2
    changed = tokens.clone()
    changed[:, t:] = (changed[:, t:] + 1) % args.vocab_size
    before, after = call(model, tokens), call(model, changed)
    if not close(before[:, :t], after[:, :t], atol=1e-5, rtol=1e-5):
        fail(
            f"with {where} your model is not causal: changing the tokens from position {t} on "
            f"changed the logits at positions before {t}. Every block's attention needs the "
            "causal mask, so that position i sees only positions 0 .. i."
        )


def _check_decode(
    model: torch.nn.Module,
    reference: ref.Llama,
    tokens: torch.Tensor,
    args: ref.ModelArgs,
    label: str,
) -> None:
    """A prefill, a chunk and single tokens with one cache must give the full forward's logits."""
    init = getattr(model, "init_cache", None)
    if callable(init):
        cache = call(init, _BATCH, args.max_seq_len)
    else:
        cache = KVCache(args.n_layers, _BATCH, args.max_seq_len, args.kv_heads, args.head_dim)
    if not isinstance(cache, KVCache):
        fail(
            f"your init_cache returned {type(cache).__name__}; return a "
            "llama_edu.attention.KVCache (or leave init_cache out)."
        )
    pieces = []
    for a, b in _DECODE_STEPS:
        out = call(model, tokens[:, a:b], cache)
        pieces.append(expect_tensor(out, (_BATCH, b - a, args.vocab_size), "the cached logits"))
        if cache.length != b:
            fail(
                f"with {label}: after a call with the tokens at positions {a}..{b - 1} the "
                f"cache says cache.length = {cache.length}; expected {b}. Read start_pos = "
                "cache.length at the start of forward and set cache.length = start_pos + seq "
                "at the end."
            )
    out = torch.cat(pieces, dim=1)
    steps = " + ".join(f"{b - a}" for a, b in _DECODE_STEPS)
    where = f"{label}, a cached decode of {steps} tokens"
    expected = reference(tokens)
    if close(out, expected):
        return
    match_mistakes(
        out,
        expected,
        _decode_mistakes(reference, tokens),
        where,
        "With a cache: start_pos = cache.length, RoPE rows start_pos .. start_pos + seq - 1, "
        "causal_mask(seq, start_pos) when seq > 1, pass cache, the layer index and start_pos to "
        "each attention, then cache.length = start_pos + seq.",
        what="the full forward pass",
    )
