"""The model-part checks: each passes correct solutions and names the typical mistakes."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from check_harness import table_tests

from llama_edu import attention as lib_attention
from llama_edu import checks
from llama_edu import ffn as lib_ffn
from llama_edu import norm as lib_norm
from llama_edu import rope as lib_rope

# --------------------------------------------------------------------------- RMSNorm


def rms_reference(x, weight, eps):
    return lib_norm.rms_norm(x, weight, eps)


def rms_via_norm(x, weight, eps):
    """Written differently: the vector norm instead of the mean of squares."""
    x32 = x.to(torch.float32)
    rms = torch.linalg.vector_norm(x32, dim=-1, keepdim=True) / math.sqrt(x.shape[-1])
    scaled = x32 / torch.sqrt(rms**2 + eps)
    return (scaled * weight.float()).to(x.dtype)


def rms_eps_outside(x, weight, eps):
    x32 = x.float()
    return (x32 / (x32.pow(2).mean(-1, keepdim=True).sqrt() + eps)).type_as(x) * weight


def rms_mean_over_all(x, weight, eps):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean() + eps)).type_as(x) * weight


def rms_mean_over_axis_0(x, weight, eps):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(0, keepdim=True) + eps)).type_as(x) * weight


def rms_no_weight(x, weight, eps):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).type_as(x)


def rms_layer_norm(x, weight, eps):
    return lib_norm.layer_norm(x, weight, eps=eps)


def rms_sqrt_of_sum(x, weight, eps):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).sum(-1, keepdim=True) + eps)).type_as(x) * weight


def rms_keeps_float32(x, weight, eps):
    x32 = x.float()
    return x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * weight.float()


def rms_in_half_precision(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rms_ignores_eps(x, weight, eps):
    return lib_norm.rms_norm(x, weight, 1e-6)


# --------------------------------------------------------------------------- sinusoidal


def sin_reference(seq_len, dim, base=10000.0):
    return lib_rope.sinusoidal_positions(seq_len, dim, base)


def sin_loop(seq_len, dim, base=10000.0):
    """Written differently: a plain double loop, as the formula reads in the paper."""
    table = torch.empty(seq_len, dim)
    for pos in range(seq_len):
        for i in range(dim // 2):
            angle = pos / base ** (2 * i / dim)
            table[pos, 2 * i] = math.sin(angle)
            table[pos, 2 * i + 1] = math.cos(angle)
    return table


def _sin_angles(seq_len, dim, base, exponent_scale=2.0):
    i = torch.arange(dim // 2, dtype=torch.float32)
    return torch.arange(seq_len, dtype=torch.float32)[:, None] / base ** (exponent_scale * i / dim)


def sin_summed(seq_len, dim, base=10000.0):
    a = _sin_angles(seq_len, dim, base)
    return (a.sin() + a.cos()).repeat_interleave(2, dim=-1)


def sin_swapped(seq_len, dim, base=10000.0):
    a = _sin_angles(seq_len, dim, base)
    return torch.stack((a.cos(), a.sin()), dim=-1).flatten(1)


def sin_concatenated(seq_len, dim, base=10000.0):
    a = _sin_angles(seq_len, dim, base)
    return torch.cat((a.sin(), a.cos()), dim=-1)


def sin_exponent_i_over_d(seq_len, dim, base=10000.0):
    a = _sin_angles(seq_len, dim, base, exponent_scale=1.0)
    return torch.stack((a.sin(), a.cos()), dim=-1).flatten(1)


def sin_exponent_sign_flipped(seq_len, dim, base=10000.0):
    i = torch.arange(dim // 2, dtype=torch.float32)
    angles = torch.arange(seq_len, dtype=torch.float32)[:, None] * base ** (2 * i / dim)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)


def sin_base_ignored(seq_len, dim, base=10000.0):
    return lib_rope.sinusoidal_positions(seq_len, dim)


# --------------------------------------------------------------------------- RoPE frequencies


def freq_reference(head_dim, theta):
    return lib_rope.rope_frequencies(head_dim, theta)


def freq_via_exp_log(head_dim, theta):
    """Written differently: exp(-2i/d * log theta), computed in float64 then cast."""
    i = torch.arange(head_dim // 2, dtype=torch.float64)
    return torch.exp(-2 * i / head_dim * math.log(theta)).float()


def freq_i_over_d(head_dim, theta):
    return 1.0 / theta ** (torch.arange(head_dim // 2).float() / head_dim)


def freq_wrong_sign(head_dim, theta):
    return theta ** (torch.arange(0, head_dim, 2).float() / head_dim)


def freq_full_length(head_dim, theta):
    return 1.0 / theta ** (torch.arange(head_dim).float() / head_dim)


def freq_theta_ignored(head_dim, theta):
    return lib_rope.rope_frequencies(head_dim, 10000.0)


# --------------------------------------------------------------------------- apply_rope


def rope_reference(x, start_pos, theta):
    return lib_rope.apply_rope(x, start_pos, theta)


def rope_complex(x, start_pos, theta):
    """Written differently: Meta's complex-number form with torch.polar and view_as_complex."""
    batch, seq, heads, head_dim = x.shape
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(start_pos, start_pos + seq).float(), freqs)
    turns = torch.polar(torch.ones_like(angles), angles)[None, :, None, :]
    pairs = torch.view_as_complex(x.float().reshape(batch, seq, heads, head_dim // 2, 2))
    return torch.view_as_real(pairs * turns).flatten(3).type_as(x)


def rope_in_input_dtype(x, start_pos, theta):
    """Hugging Face's precision convention: cos and sin cast to x's dtype, rotation done in it
    (bfloat16 here), with Meta's interleaved pairs."""
    head_dim = x.shape[-1]
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(start_pos, start_pos + x.shape[1]).float(), freqs)
    cos, sin = (t.to(x.dtype)[None, :, None, :] for t in (angles.cos(), angles.sin()))
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


def rope_rotate_half(x, start_pos, theta):
    return lib_rope.apply_rope_half(x, start_pos, theta)


def rope_ignores_start(x, start_pos, theta):
    return lib_rope.apply_rope(x, 0, theta)


def rope_wrong_direction(x, start_pos, theta):
    cos, sin = lib_rope.rope_cos_sin(x.shape[-1], x.shape[1], theta, start_pos)
    return lib_rope.rotate_pairs(x, cos, -sin)


def rope_theta_ignored(x, start_pos, theta):
    return lib_rope.apply_rope(x, start_pos)


def rope_returns_float32(x, start_pos, theta):
    return lib_rope.apply_rope(x.float(), start_pos, theta)


# --------------------------------------------------------------------------- causal mask


def mask_reference(seq_len, start_pos=0):
    return lib_attention.causal_mask(seq_len, start_pos)


def mask_triu(seq_len, start_pos=0):
    """Written differently: torch.triu of a full -inf matrix."""
    full = torch.full((seq_len, start_pos + seq_len), float("-inf"))
    return torch.triu(full, diagonal=start_pos + 1)


def mask_diagonal_hidden(seq_len, start_pos=0):
    return torch.triu(torch.full((seq_len, start_pos + seq_len), float("-inf")), start_pos)


def mask_one_future_key(seq_len, start_pos=0):
    return torch.triu(torch.full((seq_len, start_pos + seq_len), float("-inf")), start_pos + 2)


def mask_ignores_start(seq_len, start_pos=0):
    return torch.triu(torch.full((seq_len, seq_len), float("-inf")), 1)


def mask_not_shifted(seq_len, start_pos=0):
    return torch.triu(torch.full((seq_len, start_pos + seq_len), float("-inf")), 1)


def mask_bool(seq_len, start_pos=0):
    return torch.ones(seq_len, start_pos + seq_len, dtype=torch.bool).tril(start_pos)


def mask_ones_and_zeros(seq_len, start_pos=0):
    return torch.ones(seq_len, start_pos + seq_len).triu(start_pos + 1)


def mask_tril(seq_len, start_pos=0):
    return torch.tril(torch.full((seq_len, start_pos + seq_len), float("-inf")), start_pos - 1)


# --------------------------------------------------------------------------- attention


def attn_reference(q, k, v, mask=None):
    return lib_attention.attention(q, k, v, mask)


def attn_einsum(q, k, v, mask=None):
    """Written differently: einsum for both products, the scale applied to q first."""
    scores = torch.einsum("bhqd,bhkd->bhqk", q / math.sqrt(q.shape[-1]), k)
    if mask is not None:
        scores = scores + mask
    return torch.einsum("bhqk,bhkd->bhqd", scores.softmax(dim=-1), v)


def _attn(q, k, v, mask, scale, dim=-1, combine=torch.add):
    scores = q @ k.transpose(-2, -1) * scale
    if mask is not None:
        scores = combine(scores, mask)
    return torch.softmax(scores, dim=dim) @ v


def attn_float64(q, k, v, mask=None):
    """Computed and returned in float64: more precise, the same values."""
    mask = None if mask is None else mask.double()
    return lib_attention.attention(q.double(), k.double(), v.double(), mask)


def attn_non_contiguous(q, k, v, mask=None):
    """A non-contiguous result: a transposed view of a (batch, seq, heads, d) tensor."""
    out = lib_attention.attention(q, k, v, mask).transpose(1, 2).contiguous()
    return out.transpose(1, 2)


def attn_half(q, k, v, mask=None):
    return lib_attention.attention(q, k, v, mask).half()


def attn_scaled_by_d(q, k, v, mask=None):
    return _attn(q, k, v, mask, 1 / q.shape[-1])


def attn_not_scaled(q, k, v, mask=None):
    return _attn(q, k, v, mask, 1.0)


def attn_softmax_over_queries(q, k, v, mask=None):
    return _attn(q, k, v, mask, q.shape[-1] ** -0.5, dim=-2)


def attn_mask_ignored(q, k, v, mask=None):
    return _attn(q, k, v, None, q.shape[-1] ** -0.5)


def attn_mask_multiplied(q, k, v, mask=None):
    return _attn(q, k, v, mask, q.shape[-1] ** -0.5, combine=torch.mul)


def attn_k_transposed_wrongly(q, k, v, mask=None):
    return _attn(q, k.transpose(-1, 1), v, mask, q.shape[-1] ** -0.5)


# --------------------------------------------------------------------------- repeat_kv


def repeat_reference(x, n_rep):
    return lib_attention.repeat_kv(x, n_rep)


def repeat_expand_float64(x, n_rep):
    """With expand (a non-contiguous view before the reshape copies it), returned in float64."""
    b, s, h, d = x.shape
    return x[:, :, :, None, :].expand(b, s, h, n_rep, d).reshape(b, s, h * n_rep, d).double()


def repeat_to_half(x, n_rep):
    return lib_attention.repeat_kv(x, n_rep).half()


def repeat_interleave(x, n_rep):
    """Written differently: torch.repeat_interleave on the heads axis."""
    return torch.repeat_interleave(x, n_rep, dim=2)


def repeat_tiled(x, n_rep):
    return x.repeat(1, 1, n_rep, 1)


def repeat_wrong_axis(x, n_rep):
    return x.repeat_interleave(n_rep, dim=1)


def repeat_not_reshaped(x, n_rep):
    return x[:, :, :, None].expand(*x.shape[:3], n_rep, x.shape[3])


def repeat_breaks_n_rep_1(x, n_rep):
    return x.repeat_interleave(n_rep, dim=2) if n_rep > 1 else x[:, :, :0]


# --------------------------------------------------------------------------- SwiGLU


def swiglu_reference(x, w1, w2, w3):
    return lib_ffn.swiglu(x, w1, w2, w3)


def swiglu_matmul(x, w1, w2, w3):
    """Written differently: matmuls with .T and SiLU spelled out as x * sigmoid(x)."""
    gate = x @ w1.T
    return (gate * torch.sigmoid(gate) * (x @ w3.T)) @ w2.T


def swiglu_swapped(x, w1, w2, w3):
    return F.linear(F.silu(F.linear(x, w3)) * F.linear(x, w1), w2)


def swiglu_relu(x, w1, w2, w3):
    return F.linear(F.relu(F.linear(x, w1)) * F.linear(x, w3), w2)


def swiglu_gelu(x, w1, w2, w3):
    return F.linear(F.gelu(F.linear(x, w1)) * F.linear(x, w3), w2)


def swiglu_sigmoid(x, w1, w2, w3):
    return F.linear(torch.sigmoid(F.linear(x, w1)) * F.linear(x, w3), w2)


def swiglu_no_gate(x, w1, w2, w3):
    return F.linear(F.silu(F.linear(x, w1)), w2)


def swiglu_transposed(x, w1, w2, w3):
    return (F.silu(x @ w1) * (x @ w3)) @ w2


def swiglu_down_transposed(x, w1, w2, w3):
    return (F.silu(x @ w1.T) * (x @ w3.T)) @ w2


def swiglu_crashes_on_shapes(x, w1, w2, w3):
    """Right while hidden == dim, transposed (so crashing) once they differ."""
    if w1.shape[0] == w1.shape[1]:
        return swiglu_reference(x, w1, w2, w3)
    return swiglu_transposed(x, w1, w2, w3)


# --------------------------------------------------------------------------- ffn_hidden_dim


def hidden_reference(dim, multiple_of, ffn_dim_multiplier=None):
    return lib_ffn.ffn_hidden_dim(dim, multiple_of, ffn_dim_multiplier)


def hidden_with_ceil(dim, multiple_of, ffn_dim_multiplier=None):
    """Written differently: math.ceil on a fraction instead of integer arithmetic."""
    hidden = 8 * dim // 3
    if ffn_dim_multiplier is not None:
        hidden = int(hidden * ffn_dim_multiplier)
    return math.ceil(hidden / multiple_of) * multiple_of


def hidden_without_two_thirds(dim, multiple_of, ffn_dim_multiplier=None):
    hidden = int((ffn_dim_multiplier or 1.0) * 4 * dim)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def hidden_rounded_down(dim, multiple_of, ffn_dim_multiplier=None):
    hidden = int((ffn_dim_multiplier or 1.0) * int(8 * dim / 3))
    return multiple_of * (hidden // multiple_of)


def hidden_multiplier_after_rounding(dim, multiple_of, ffn_dim_multiplier=None):
    rounded = multiple_of * math.ceil(int(8 * dim / 3) / multiple_of)
    return int(rounded * (ffn_dim_multiplier or 1.0))


def hidden_as_float(dim, multiple_of, ffn_dim_multiplier=None):
    return float(lib_ffn.ffn_hidden_dim(dim, multiple_of, ffn_dim_multiplier))


def hidden_ignores_multiplier(dim, multiple_of, ffn_dim_multiplier=None):
    return lib_ffn.ffn_hidden_dim(dim, multiple_of)


# --------------------------------------------------------------------------- the tests

CHECKS = [
    "rms_norm",
    "sinusoidal_positions",
    "rope_frequencies",
    "apply_rope",
    "causal_mask",
    "attention",
    "repeat_kv",
    "swiglu",
    "ffn_hidden_dim",
]

CORRECT: list[tuple[str, Callable]] = [
    ("rms_norm", rms_reference),
    ("rms_norm", rms_via_norm),
    ("sinusoidal_positions", sin_reference),
    ("sinusoidal_positions", sin_loop),
    ("rope_frequencies", freq_reference),
    ("rope_frequencies", freq_via_exp_log),
    ("apply_rope", rope_reference),
    ("apply_rope", rope_complex),
    ("apply_rope", rope_in_input_dtype),
    ("causal_mask", mask_reference),
    ("causal_mask", mask_triu),
    ("attention", attn_reference),
    ("attention", attn_einsum),
    ("attention", lib_attention.sdpa_attention),
    ("attention", attn_float64),
    ("attention", attn_non_contiguous),
    ("repeat_kv", repeat_reference),
    ("repeat_kv", repeat_expand_float64),
    ("repeat_kv", repeat_interleave),
    ("swiglu", swiglu_reference),
    ("swiglu", swiglu_matmul),
    ("ffn_hidden_dim", hidden_reference),
    ("ffn_hidden_dim", hidden_with_ceil),
]

WRONG: list[tuple[str, Callable, tuple[str, ...]]] = [
    ("rms_norm", rms_eps_outside, ("eps", "outside the square root")),
    ("rms_norm", rms_mean_over_all, ("mean", "all values")),
    ("rms_norm", rms_mean_over_axis_0, ("mean is taken over axis 0", "dim=-1")),
    ("rms_norm", rms_no_weight, ("weight is missing",)),
    ("rms_norm", rms_layer_norm, ("subtracted the mean", "LayerNorm")),
    ("rms_norm", rms_sqrt_of_sum, ("sum of squares",)),
    ("rms_norm", rms_keeps_float32, ("float32", "cast back", ".type_as(x)")),
    ("rms_norm", rms_in_half_precision, ("float16", "65504", "x.float()")),
    ("rms_norm", rms_ignores_eps, ("`eps` argument is ignored",)),
    ("sinusoidal_positions", sin_summed, ("summed",)),
    ("sinusoidal_positions", sin_swapped, ("swapped",)),
    ("sinusoidal_positions", sin_concatenated, ("concatenated", "[all sin | all cos]")),
    ("sinusoidal_positions", sin_exponent_i_over_d, ("i/dim", "2i/dim")),
    ("sinusoidal_positions", sin_exponent_sign_flipped, ("wrong sign",)),
    ("sinusoidal_positions", sin_base_ignored, ("`base` argument is ignored",)),
    ("rope_frequencies", freq_i_over_d, ("i/head_dim", "2i/head_dim")),
    ("rope_frequencies", freq_wrong_sign, ("wrong sign",)),
    ("rope_frequencies", freq_full_length, ("head_dim // 2",)),
    ("rope_frequencies", freq_theta_ignored, ("`theta` argument is ignored",)),
    ("apply_rope", rope_rotate_half, ("rotate-half", "interleaved pairs")),
    ("apply_rope", rope_ignores_start, ("start_pos is ignored",)),
    ("apply_rope", rope_wrong_direction, ("wrong way", "sign of sin")),
    ("apply_rope", rope_theta_ignored, ("`theta` argument is ignored",)),
    ("apply_rope", rope_returns_float32, ("dtype float32", ".type_as(x)")),
    ("causal_mask", mask_diagonal_hidden, ("off by one", "diagonal is masked")),
    ("causal_mask", mask_one_future_key, ("off by one", "one future key")),
    ("causal_mask", mask_ignores_start, ("start_pos is ignored", "(5, 8)")),
    ("causal_mask", mask_not_shifted, ("start_pos is ignored in the pattern",)),
    ("causal_mask", mask_bool, ("True/False", "float('-inf')")),
    ("causal_mask", mask_ones_and_zeros, ("1 and 0", "float('-inf')")),
    ("causal_mask", mask_tril, ("triangle is flipped", "torch.triu")),
    ("attention", attn_scaled_by_d, ("divided by head_dim", "sqrt(head_dim)")),
    ("attention", attn_not_scaled, ("not scaled",)),
    ("attention", attn_softmax_over_queries, ("queries axis", "dim=-1")),
    ("attention", attn_mask_ignored, ("mask is ignored",)),
    ("attention", attn_mask_multiplied, ("mask is multiplied", "scores + mask")),
    ("attention", attn_k_transposed_wrongly, ("raised RuntimeError", "k.transpose(-2, -1)")),
    ("attention", attn_half, ("dtype float16", "expected float32")),
    ("repeat_kv", repeat_tiled, ("0, 1, 0, 1", "repeat_interleave")),
    ("repeat_kv", repeat_to_half, ("dtype float16", "keep x's dtype")),
    ("repeat_kv", repeat_wrong_axis, ("axis 1 (seq)", "axis 2")),
    ("repeat_kv", repeat_not_reshaped, ("5-D", "reshape")),
    ("repeat_kv", repeat_breaks_n_rep_1, ("n_rep = 1", "return x")),
    ("swiglu", swiglu_swapped, ("w1 and w3 are swapped",)),
    ("swiglu", swiglu_relu, ("ReLU instead of SiLU",)),
    ("swiglu", swiglu_gelu, ("GELU instead of SiLU",)),
    ("swiglu", swiglu_sigmoid, ("sigmoid instead of SiLU",)),
    ("swiglu", swiglu_no_gate, ("gate is missing",)),
    ("swiglu", swiglu_transposed, ("used transposed", "x @ w1.T")),
    ("swiglu", swiglu_down_transposed, ("used transposed", "nn.Linear's layout")),
    ("swiglu", swiglu_crashes_on_shapes, ("raised RuntimeError", "nn.Linear's layout")),
    ("ffn_hidden_dim", hidden_without_two_thirds, ("2/3 is missing",)),
    ("ffn_hidden_dim", hidden_rounded_down, ("rounded down", "round up")),
    ("ffn_hidden_dim", hidden_multiplier_after_rounding, ("multiplier is applied after",)),
    ("ffn_hidden_dim", hidden_as_float, ("float", "must be an int")),
    ("ffn_hidden_dim", hidden_ignores_multiplier, ("ffn_dim_multiplier is ignored",)),
]


# the five tests every table of checks gets (tests/check_harness.py)
globals().update(table_tests(CORRECT, WRONG, CHECKS))


def test_in_place_changes_to_the_input_are_named():
    def normalises_in_place(x, weight, eps):
        x.mul_(torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
        return x * weight

    with pytest.raises(checks.CheckFailed, match="in place"):
        checks.rms_norm(normalises_in_place)


def test_the_known_llama_sizes_match_the_reference():
    sizes = {
        (4096, 256, None): 11008,
        (5120, 256, None): 13824,
        (8192, 4096, 1.3): 28672,
        (4096, 1024, 1.3): 14336,
        (2048, 256, 1.5): 8192,
    }
    for args, size in sizes.items():
        assert lib_ffn.ffn_hidden_dim(*args) == size


def test_returning_a_tensor_is_named():
    with pytest.raises(checks.CheckFailed, match="should be a torch.Tensor, but it is list"):
        checks.sinusoidal_positions(lambda seq_len, dim, base=10000.0: [[0.0] * dim] * seq_len)
