"""Library building blocks: RMSNorm, RoPE, attention, SwiGLU."""

import math

import pytest
import torch
import torch.nn.functional as F

from llama_edu import attention as att
from llama_edu import ffn, norm, rope

GEN = torch.Generator().manual_seed(0)


def randn(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=GEN).to(dtype)


# --- RMSNorm -------------------------------------------------------------------------------


def test_rms_norm_matches_the_formula_and_torch():
    x, w = randn(2, 3, 8), randn(8)
    by_formula = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-5) * w
    torch.testing.assert_close(norm.rms_norm(x, w, 1e-5), by_formula)
    torch.testing.assert_close(norm.rms_norm(x, w, 1e-6), F.rms_norm(x, (8,), w, eps=1e-6))


def test_rms_norm_worked_example():
    # x = (3, 4): mean of squares 12.5, rms 3.5355
    out = norm.rms_norm(torch.tensor([3.0, 4.0]), torch.ones(2), eps=0.0)
    torch.testing.assert_close(out, torch.tensor([3 / math.sqrt(12.5), 4 / math.sqrt(12.5)]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rms_norm_low_precision_is_computed_in_float32(dtype):
    x = torch.full((1, 64), 300.0, dtype=dtype)  # 300**2 = 90000 overflows float16
    out = norm.rms_norm(x, torch.ones(64, dtype=dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), torch.ones(1, 64), atol=1e-2, rtol=0)
    naive = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    if dtype == torch.float16:
        assert not torch.isfinite(naive).all() or (naive == 0).all()


def test_rms_norm_module_eps_and_weight_shape_error():
    layer = norm.RMSNorm(4, eps=1e-6)
    assert layer.eps == 1e-6 and layer.weight.shape == (4,)
    with pytest.raises(ValueError, match=r"weight has shape \(3,\).*\(4,\)"):
        norm.rms_norm(randn(2, 4), torch.ones(3))


@pytest.mark.parametrize("dim", [8, 128, 352, 4096])
def test_rms_norm_module_gives_the_same_bits_with_and_without_gradients(dim):
    # without gradients the module takes PyTorch's fused kernel (faster decoding); a greedy
    # token must not depend on whether the model was called under no_grad
    layer = norm.RMSNorm(dim, eps=1e-6)
    with torch.no_grad():
        layer.weight.copy_(randn(dim))
    x = randn(3, 5, dim) * 7
    with torch.no_grad():
        fast = layer(x)
    with torch.inference_mode():
        assert torch.equal(layer(x), fast)
    assert torch.equal(layer(x).detach(), fast)
    assert torch.equal(norm.rms_norm(x, layer.weight.detach(), 1e-6), fast)


def test_rms_norm_module_bad_eps_is_explained_without_gradients_too():
    layer = norm.RMSNorm(4, eps=-1e-5)
    with torch.no_grad(), pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        layer(randn(2, 4))


def test_layer_norm_matches_torch():
    x, w, b = randn(3, 10), randn(10), randn(10)
    torch.testing.assert_close(norm.layer_norm(x, w, b), F.layer_norm(x, (10,), w, b, 1e-5))


# --- positions -----------------------------------------------------------------------------


def test_sinusoidal_puts_sin_on_even_and_cos_on_odd():
    table = rope.sinusoidal_positions(50, 16)
    pos, i = 7, 3
    angle = pos / 10000 ** (2 * i / 16)
    assert table.shape == (50, 16)
    assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
    assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_rope_frequencies_formula():
    freqs = rope.rope_frequencies(8, 10000.0)
    expected = torch.tensor([10000 ** (-2 * i / 8) for i in range(4)])
    torch.testing.assert_close(freqs, expected)
    with pytest.raises(ValueError, match="head_dim must be even"):
        rope.rope_frequencies(7)


def complex_rope(x, start_pos, theta):
    """RoPE as multiplication by unit complex numbers, written independently of the library."""
    b, s, h, d = x.shape
    pos = torch.arange(start_pos, start_pos + s, dtype=torch.float64)
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    rot = torch.polar(torch.ones(s, d // 2, dtype=torch.float64), torch.outer(pos, freqs))
    xc = torch.view_as_complex(x.double().reshape(b, s, h, d // 2, 2))
    return torch.view_as_real(xc * rot[None, :, None, :]).reshape(b, s, h, d)


@pytest.mark.parametrize("start_pos", [0, 5])
def test_apply_rope_equals_complex_rotation(start_pos):
    x = randn(2, 6, 3, 8)
    out = rope.apply_rope(x, start_pos, 500000.0)
    torch.testing.assert_close(
        out.double(), complex_rope(x, start_pos, 500000.0), atol=1e-5, rtol=0
    )


def test_rope_keeps_norms_and_scores_depend_only_on_distance():
    q, k = randn(1, 1, 1, 16), randn(1, 1, 1, 16)

    def score(m, n):
        qm = rope.apply_rope(q, m)
        kn = rope.apply_rope(k, n)
        return (qm * kn).sum().item()

    assert score(3, 1) == pytest.approx(score(10, 8), abs=1e-4)
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-4)
    torch.testing.assert_close(rope.apply_rope(q, 9).norm(), q.norm())


def test_the_two_conventions_agree_after_permuting_features():
    head_dim, n_heads = 8, 2
    x = randn(2, 5, n_heads, head_dim)
    perm = torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])
    meta = rope.apply_rope(x, 3)
    hf = rope.apply_rope_half(x[..., perm], 3)
    torch.testing.assert_close(hf, meta[..., perm])
    assert not torch.allclose(rope.apply_rope_half(x, 3), meta)


def test_weight_permutation_round_trip_and_effect():
    n_heads, head_dim, dim = 2, 8, 16
    w = randn(n_heads * head_dim, dim)
    w_half = rope.interleaved_to_half(w, n_heads)
    assert torch.equal(rope.half_to_interleaved(w_half, n_heads), w)
    x = randn(1, 4, dim)
    q_meta = rope.apply_rope((x @ w.T).view(1, 4, n_heads, head_dim), 0)
    q_hf = rope.apply_rope_half((x @ w_half.T).view(1, 4, n_heads, head_dim), 0)
    scores_meta = torch.einsum("bshd,bthd->bhst", q_meta, q_meta)
    scores_hf = torch.einsum("bshd,bthd->bhst", q_hf, q_hf)
    torch.testing.assert_close(scores_meta, scores_hf, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="n_kv_heads"):
        rope.interleaved_to_half(randn(12, 4), 5)


def test_llama3_scaling_keeps_fast_pairs_and_slows_down_slow_pairs():
    scaling = {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    plain = rope.rope_frequencies(128, 500000.0)
    scaled = rope.rope_frequencies(128, 500000.0, scaling)
    wavelen = 2 * math.pi / plain
    fast, slow = wavelen < 8192 / 4, wavelen > 8192 / 1
    assert fast.any() and slow.any() and (~fast & ~slow).any()
    torch.testing.assert_close(scaled[fast], plain[fast])
    torch.testing.assert_close(scaled[slow], plain[slow] / 8)
    middle = ~fast & ~slow
    assert ((scaled[middle] < plain[middle]) & (scaled[middle] > plain[middle] / 8)).all()
    with pytest.raises(ValueError, match="low_freq_factor"):
        rope.rope_frequencies(8, 1e4, {"factor": 8.0})


# --- attention -----------------------------------------------------------------------------


def test_causal_mask_with_offset_matches_the_issue_example():
    inf = float("-inf")
    expected = torch.tensor([[0, 0, 0, inf, inf], [0, 0, 0, 0, inf], [0, 0, 0, 0, 0]])
    assert torch.equal(att.causal_mask(3, start_pos=2), expected)
    assert torch.equal(att.causal_mask(1, start_pos=7), torch.zeros(1, 8))
    assert torch.equal(att.causal_mask(2), torch.tensor([[0, inf], [0, 0]]))


def test_attention_matches_formula_and_sdpa():
    q, k, v = randn(2, 3, 5, 4), randn(2, 3, 7, 4), randn(2, 3, 7, 4)
    mask = att.causal_mask(5, start_pos=2)
    by_hand = torch.softmax(q @ k.transpose(-1, -2) / 2.0 + mask, dim=-1) @ v
    torch.testing.assert_close(att.attention(q, k, v, mask), by_hand)
    torch.testing.assert_close(att.sdpa_attention(q, k, v, mask), by_hand, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(att.attention(q, k, v), att.sdpa_attention(q, k, v))


def test_equal_scores_give_one_over_n():
    weights = att.attention_weights(torch.zeros(1, 1, 1, 4), torch.ones(1, 1, 6, 4))
    torch.testing.assert_close(weights, torch.full((1, 1, 1, 6), 1 / 6))


def test_attention_shape_errors_name_the_shapes():
    q, k = randn(1, 2, 3, 4), randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match=r"\(1, 2, 3, 4\).*\(1, 2, 3, 8\)"):
        att.attention(q, k, randn(1, 2, 3, 8))
    with pytest.raises(ValueError, match=r"mask has shape \(3, 4\).*causal_mask\(3, start_pos=0\)"):
        att.attention(q, k, k, torch.zeros(3, 4))


def test_repeat_kv_equals_repeat_interleave():
    x = randn(2, 5, 3, 4)
    torch.testing.assert_close(att.repeat_kv(x, 4), x.repeat_interleave(4, dim=2))
    assert att.repeat_kv(x, 1) is x
    with pytest.raises(ValueError):
        att.repeat_kv(x, 0)


def test_attention_module_sdpa_and_written_out_agree_and_gqa_checks():
    torch.manual_seed(0)
    layer = att.Attention(dim=32, n_heads=4, n_kv_heads=2)
    x = randn(2, 6, 32)
    cos, sin = rope.rope_cos_sin(8, 6)
    mask = att.causal_mask(6)
    fast = layer(x, cos, sin, mask)
    out, weights = layer(x, cos, sin, mask, return_weights=True)
    torch.testing.assert_close(fast, out, atol=1e-5, rtol=1e-5)
    assert weights.shape == (2, 4, 6, 6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 6))
    assert (weights.triu(1) == 0).all()
    with pytest.raises(ValueError, match="n_kv_heads=3"):
        att.Attention(dim=32, n_heads=4, n_kv_heads=3)


def test_attention_module_has_no_biases():
    layer = att.Attention(dim=16, n_heads=2)
    assert all(m.bias is None for m in (layer.wq, layer.wk, layer.wv, layer.wo))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_attention_low_precision_runs_and_keeps_dtype(dtype):
    q, k, v = (randn(1, 2, 4, 8, dtype=dtype) for _ in range(3))
    out = att.attention(q, k, v, att.causal_mask(4).to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(
        out.float(),
        att.attention(q.float(), k.float(), v.float(), att.causal_mask(4)),
        atol=2e-2,
        rtol=0,
    )


# --- feed-forward --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dim", "multiple_of", "mult", "hidden"),
    [
        (4096, 256, None, 11008),
        (5120, 256, None, 13824),
        (8192, 4096, 1.3, 28672),
        (4096, 1024, 1.3, 14336),
        (2048, 256, 1.5, 8192),
    ],
)
def test_ffn_hidden_dim_of_real_llamas(dim, multiple_of, mult, hidden):
    assert ffn.ffn_hidden_dim(dim, multiple_of, mult) == hidden


def test_swiglu_matches_module_and_formula():
    layer = ffn.FeedForward(8, 24)
    x = randn(3, 8)
    w1, w2, w3 = layer.w1.weight, layer.w2.weight, layer.w3.weight
    expected = (F.silu(x @ w1.T) * (x @ w3.T)) @ w2.T
    torch.testing.assert_close(ffn.swiglu(x, w1, w2, w3), expected)
    torch.testing.assert_close(layer(x), expected)
    assert all(m.bias is None for m in (layer.w1, layer.w2, layer.w3))
    with pytest.raises(ValueError, match=r"w2 \(24, 8\) must be \(8, hidden\)"):
        ffn.swiglu(x, w1, w2.T, w3)


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_attention_layer_names_a_mask_of_the_wrong_shape(use_sdpa):
    layer = att.Attention(16, n_heads=4, n_kv_heads=2, use_sdpa=use_sdpa)
    cos, sin = rope.rope_cos_sin(4, 5)
    with pytest.raises(ValueError, match=r"causal_mask\(5, start_pos=0\)"):
        layer(torch.randn(1, 5, 16), cos, sin, att.causal_mask(4))
