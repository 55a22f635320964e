"""The full-model checks: each passes correct solutions and names the typical mistakes."""

from __future__ import annotations

import math

import pytest
import torch
from check_harness import table_tests
from einops import rearrange
from torch import nn

from llama_edu import checks
from llama_edu.attention import Attention, KVCache, attention, repeat_kv
from llama_edu.ffn import FeedForward
from llama_edu.model import Llama, ModelArgs
from llama_edu.model import count_params as lib_count_params
from llama_edu.norm import RMSNorm, rms_norm
from llama_edu.rope import rope_cos_sin, rotate_pairs

# --------------------------------------------------------------------------- transformer block


def block_reference(x, block, cos, sin, mask):
    h = x + block.attention(block.attention_norm(x), cos, sin, mask)
    return h + block.feed_forward(block.ffn_norm(h))


def block_from_weights(x, block, cos, sin, mask):
    """Written differently: norms and attention spelled out from the raw weights."""
    att = block.attention

    def norm(t, module):
        return rms_norm(t, module.weight, module.eps)

    xn = norm(x, block.attention_norm)
    q = rearrange(xn @ att.wq.weight.T, "b s (h d) -> b s h d", h=att.n_heads)
    k = rearrange(xn @ att.wk.weight.T, "b s (h d) -> b s h d", h=att.n_kv_heads)
    v = rearrange(xn @ att.wv.weight.T, "b s (h d) -> b s h d", h=att.n_kv_heads)
    q, k = rotate_pairs(q, cos, sin), rotate_pairs(k, cos, sin)
    k, v = repeat_kv(k, att.n_rep), repeat_kv(v, att.n_rep)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    out = rearrange(attention(q, k, v, mask), "b h s d -> b s (h d)") @ att.wo.weight.T
    h = x + out
    ff = block.feed_forward
    hn = norm(h, block.ffn_norm)
    gate = hn @ ff.w1.weight.T
    return h + (gate * torch.sigmoid(gate) * (hn @ ff.w3.weight.T)) @ ff.w2.weight.T


def block_post_norm(x, block, cos, sin, mask):
    h = block.attention_norm(x + block.attention(x, cos, sin, mask))
    return block.ffn_norm(h + block.feed_forward(h))


def block_no_attention_residual(x, block, cos, sin, mask):
    h = block.attention(block.attention_norm(x), cos, sin, mask)
    return h + block.feed_forward(block.ffn_norm(h))


def block_no_ffn_residual(x, block, cos, sin, mask):
    h = x + block.attention(block.attention_norm(x), cos, sin, mask)
    return block.feed_forward(block.ffn_norm(h))


def block_one_norm_twice(x, block, cos, sin, mask):
    h = x + block.attention(block.attention_norm(x), cos, sin, mask)
    return h + block.feed_forward(block.attention_norm(h))


def block_ffn_on_x(x, block, cos, sin, mask):
    h = x + block.attention(block.attention_norm(x), cos, sin, mask)
    return h + block.feed_forward(block.ffn_norm(x))


def block_without_mask(x, block, cos, sin, mask):
    h = x + block.attention(block.attention_norm(x), cos, sin, None)
    return h + block.feed_forward(block.ffn_norm(h))


def block_calls_the_block(x, block, cos, sin, mask):
    return block(x, cos, sin, mask)[0]


def block_returns_tuple(x, block, cos, sin, mask):
    out = block_reference(x, block, cos, sin, mask)
    return out, None


def block_in_place(x, block, cos, sin, mask):
    x += block.attention(block.attention_norm(x), cos, sin, mask)
    return x + block.feed_forward(block.ffn_norm(x))


# --------------------------------------------------------------------------- parameter count


def count_reference(args):
    return lib_count_params(args)


def count_by_formula(args):
    """Written differently: the formula, term by term."""
    d, kv_width = args.dim, args.kv_heads * args.head_dim
    attention_params = 2 * d * d + 2 * d * kv_width
    ffn = 3 * d * args.hidden_dim
    output = 0 if args.tie_embeddings else args.vocab_size * d
    return args.vocab_size * d + args.n_layers * (attention_params + ffn + 2 * d) + d + output


def count_unique_tensors(args):
    """Written differently: build on the meta device and count each tensor once by identity."""
    with torch.device("meta"):
        model = Llama(args)
    seen = {id(p): p.numel() for p in model.state_dict(keep_vars=True).values()}
    return sum(seen.values())


def count_ignores_kv_heads(args):
    d = args.dim
    output = 0 if args.tie_embeddings else args.vocab_size * d
    per_layer = 4 * d * d + 3 * d * args.hidden_dim + 2 * d
    return args.vocab_size * d + args.n_layers * per_layer + d + output


def count_tied_twice(args):
    return count_by_formula(args) + (args.vocab_size * args.dim if args.tie_embeddings else 0)


def count_without_norms(args):
    return count_by_formula(args) - (2 * args.n_layers + 1) * args.dim


def count_without_final_norm(args):
    return count_by_formula(args) - args.dim


def count_hidden_4d(args):
    return count_by_formula(args) + 3 * args.n_layers * args.dim * (4 * args.dim - args.hidden_dim)


def count_with_biases(args):
    d, kv_width, hidden = args.dim, args.kv_heads * args.head_dim, args.hidden_dim
    return count_by_formula(args) + args.n_layers * (d + 2 * kv_width + d + 2 * hidden + d)


def count_as_float(args):
    return float(count_by_formula(args))


def count_as_tensor(args):
    return torch.tensor(count_by_formula(args))


def count_off_by_a_bit(args):
    return count_by_formula(args) + 7


# --------------------------------------------------------------------------- the whole model


class OtherBlock(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.attention = Attention(args.dim, args.n_heads, args.kv_heads, use_sdpa=False)
        self.feed_forward = FeedForward(args.dim, args.hidden_dim)
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)


class OtherLlama(nn.Module):
    """Written differently: no table buffers (made per call), a triu mask, tied the other way,
    no init_cache, written-out attention. Class attributes switch on typical mistakes."""

    pre_norm = True
    final_norm = True
    masked = True
    mask_with_cache = True
    theta = None  # None: args.rope_theta
    scaling = True
    offset = True
    tie = True
    advance = True
    pass_cache = True
    embed_scale = False
    layers_name = "layers"

    def __init__(self, args):
        super().__init__()
        self.args = args
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        if args.tie_embeddings and self.tie:
            self.tok_embeddings.weight = self.output.weight
        setattr(
            self, self.layers_name, nn.ModuleList(OtherBlock(args) for _ in range(args.n_layers))
        )
        self.norm = RMSNorm(args.dim, eps=args.norm_eps)

    def tables(self, start, seq):
        a = self.args
        theta = a.rope_theta if self.theta is None else self.theta
        scaling = a.rope_scaling if self.scaling else None
        return rope_cos_sin(a.head_dim, seq, theta, start if self.offset else 0, scaling=scaling)

    def forward(self, tokens, cache=None):
        seq = tokens.shape[1]
        start = 0 if cache is None else cache.length
        cos, sin = self.tables(start, seq)
        seen = start if self.pass_cache else 0  # without the cache only this call's keys
        mask = torch.full((seq, seen + seq), float("-inf")).triu(seen + 1)
        if not self.masked or (cache is not None and not self.mask_with_cache):
            mask = None
        h = self.tok_embeddings(tokens)
        if self.embed_scale:
            h = h * self.args.dim**0.5
        for i, block in enumerate(getattr(self, self.layers_name)):
            kv = cache if self.pass_cache else None

            def attend(v, block=block, i=i, kv=kv):
                return block.attention(v, cos, sin, mask, kv, i, start)

            if self.pre_norm:
                h = h + attend(block.attention_norm(h))
                h = h + block.feed_forward(block.ffn_norm(h))
            else:
                h = block.attention_norm(h + attend(h))
                h = block.ffn_norm(h + block.feed_forward(h))
        if cache is not None and self.advance:
            cache.length = start + seq
        return self.output(self.norm(h) if self.final_norm else h)


class LlamaWithInitCache(OtherLlama):
    def init_cache(self, batch_size, max_seq_len):
        a = self.args
        return KVCache(a.n_layers, batch_size, max_seq_len, a.kv_heads, a.head_dim)


class PostNormLlama(OtherLlama):
    pre_norm = False


class NoFinalNormLlama(OtherLlama):
    final_norm = False


class NoMaskLlama(OtherLlama):
    masked = False


class MaskDroppedWithCacheLlama(OtherLlama):
    mask_with_cache = False


class Theta10000Llama(OtherLlama):
    theta = 10000.0


class NoRopeScalingLlama(OtherLlama):
    scaling = False


class PositionsNotOffsetLlama(OtherLlama):
    offset = False


class UntiedLlama(OtherLlama):
    tie = False


class LengthNotAdvancedLlama(OtherLlama):
    advance = False


class CacheNotPassedLlama(OtherLlama):
    pass_cache = False


class ScaledEmbeddingsLlama(OtherLlama):
    embed_scale = True


class BlocksNotLayersLlama(OtherLlama):
    layers_name = "blocks"


class SavedRopeTablesLlama(Llama):
    def __init__(self, args):
        super().__init__(args)
        self.register_buffer("rope_cos", self.rope_cos.clone())  # persistent: saved


class AlwaysTiedLlama(Llama):
    def __init__(self, args):
        super().__init__(args)
        self.output.weight = self.tok_embeddings.weight


class ReturnsTupleLlama(Llama):
    def forward(self, tokens, cache=None):
        return super().forward(tokens, cache), None


# --------------------------------------------------------------------------- tables

CORRECT = [
    ("transformer_block", block_reference),
    ("transformer_block", block_from_weights),
    ("count_params", count_reference),
    ("count_params", count_by_formula),
    ("count_params", count_unique_tensors),
    ("llama_model", Llama),
    ("llama_model", OtherLlama),
    ("llama_model", LlamaWithInitCache),
]

WRONG = [
    ("transformer_block", block_post_norm, ["post-norm", "original Transformer"]),
    ("transformer_block", block_no_attention_residual, ["residual", "around the attention"]),
    ("transformer_block", block_no_ffn_residual, ["residual", "around the feed-forward"]),
    ("transformer_block", block_one_norm_twice, ["attention_norm is used for both", "ffn_norm"]),
    ("transformer_block", block_ffn_on_x, ["applied to x instead of h"]),
    ("transformer_block", block_without_mask, ["mask is not passed"]),
    ("transformer_block", block_calls_the_block, ["called the block itself"]),
    ("transformer_block", block_returns_tuple, ["returned a tuple"]),
    ("transformer_block", block_in_place, ["in place"]),
    ("count_params", count_ignores_kv_heads, ["n_kv_heads", "llama3-8b"]),
    ("count_params", count_tied_twice, ["counted twice", "llama3.2-1b"]),
    ("count_params", count_without_norms, ["RMSNorm weights are missing"]),
    ("count_params", count_without_final_norm, ["final norm is missing"]),
    ("count_params", count_hidden_4d, ["4 * dim", "hidden_dim"]),
    ("count_params", count_with_biases, ["biases", "bias=False"]),
    ("count_params", count_as_float, ["float", "return an int"]),
    ("count_params", count_as_tensor, ["tensor", "Python int"]),
    ("count_params", count_off_by_a_bit, ["expected 6,738,415,616", "embeddings 131,072,000"]),
    ("llama_model", PostNormLlama, ["post-norm", "original Transformer"]),
    ("llama_model", NoFinalNormLlama, ["final norm is missing"]),
    ("llama_model", NoMaskLlama, ["no causal mask"]),
    ("llama_model", MaskDroppedWithCacheLlama, ["with a cache the mask is left out"]),
    ("llama_model", Theta10000Llama, ["theta = 10000", "rope_theta = 500000"]),
    ("llama_model", NoRopeScalingLlama, ["ignore args.rope_scaling"]),
    ("llama_model", PositionsNotOffsetLlama, ["not offset by start_pos", "cached decode"]),
    ("llama_model", UntiedLlama, ["tie_embeddings is True", "two separate tensors"]),
    ("llama_model", AlwaysTiedLlama, ["tie_embeddings is False"]),
    ("llama_model", LengthNotAdvancedLlama, ["cache.length = 0; expected 5"]),
    ("llama_model", CacheNotPassedLlama, ["cache is not passed to the attention"]),
    ("llama_model", ScaledEmbeddingsLlama, ["sqrt(dim)"]),
    (
        "llama_model",
        BlocksNotLayersLlama,
        ["missing 18: layers.0.attention.wk.weight", "extra 18: blocks.0"],
    ),
    ("llama_model", SavedRopeTablesLlama, ["extra 1: rope_cos", "persistent=False"]),
    ("llama_model", ReturnsTupleLlama, ["torch.Tensor", "tuple"]),
]

CHECKS = sorted({case[0] for case in CORRECT})


# the five tests every table of checks gets (tests/check_harness.py)
globals().update(table_tests(CORRECT, WRONG, CHECKS))


def test_a_crash_is_reported_with_the_call():
    def crashes(x, block, cos, sin, mask):
        return block.attention(x, cos, sin)[:, :, :3] + x

    with pytest.raises(checks.CheckFailed, match="your function raised RuntimeError"):
        checks.transformer_block(crashes)


def test_the_formula_matches_the_built_model_on_every_preset():
    for name in (
        "tiny",
        "llama-7b",
        "llama2-7b",
        "llama2-13b",
        "llama2-70b",
        "llama3-8b",
        "llama3.1-8b",
        "llama3.2-1b",
    ):
        args = ModelArgs.from_name(name)
        assert count_by_formula(args) == lib_count_params(args), name
        assert math.isclose(count_unique_tensors(args), lib_count_params(args)), name


def test_a_model_that_reads_later_tokens_is_named_not_causal():
    """The causality step on its own (a whole wrong model is already caught by its logits)."""
    from llama_edu.checks._core import _Failure
    from llama_edu.checks.model import _check_causal

    args = ModelArgs(dim=32, n_layers=1, n_heads=4, vocab_size=64, multiple_of=16)

    def reads_the_future(tokens, cache=None):
        seen = torch.nn.functional.one_hot(tokens, args.vocab_size).float()
        return seen.flip(1).cumsum(1).flip(1)  # position i counts the tokens i .. end

    tokens = torch.randint(0, args.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    with pytest.raises(_Failure, match="not causal: changing the tokens from position 5"):
        _check_causal(reads_the_future, tokens, args, "a test")

    def reads_the_past(tokens, cache=None):
        return torch.nn.functional.one_hot(tokens, args.vocab_size).float().cumsum(1)

    _check_causal(reads_the_past, tokens, args, "a test")  # position i counts tokens 0 .. i
