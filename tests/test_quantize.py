"""llama_edu.quantize: absmax int8, and Q8_0 / Q4_0 byte for byte against the gguf package."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf import quants as gguf_quants
from torch import nn

from llama_edu import quantize as qz
from llama_edu.model import Llama, ModelArgs


def weights(rows: int = 6, cols: int = 96, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen)
    w[0, :32] = 0.0  # a block of zeros
    w[1, 5] = 7.0  # a block whose largest weight is positive (Q4_0's sign matters)
    w[2, 40] = -7.0
    w[3, :32] = torch.linspace(-1, 1, 32)
    return w


def reference_blocks(w: torch.Tensor, kind: GGMLQuantizationType) -> np.ndarray:
    """gguf's bytes for w, one row of bytes per block: 2 bytes of float16 scale, then the data."""
    packed = gguf_quants.quantize(w.numpy(), kind)  # (rows, bytes per row)
    block_bytes = {GGMLQuantizationType.Q8_0: 34, GGMLQuantizationType.Q4_0: 18}[kind]
    return packed.reshape(-1, block_bytes)


def test_q8_0_equals_llama_cpps_reference_byte_for_byte():
    w = weights()
    q, d = qz.quantize_q8_0(w)
    ref = reference_blocks(w, GGMLQuantizationType.Q8_0)
    assert np.array_equal(d.numpy().view(np.uint8).reshape(-1, 2), ref[:, :2])
    assert np.array_equal(q.numpy().view(np.uint8), ref[:, 2:])
    back = qz.dequantize_q8_0(q, d, tuple(w.shape))
    expected = gguf_quants.dequantize(gguf_quants.quantize(w.numpy(), GGMLQuantizationType.Q8_0),
                                      GGMLQuantizationType.Q8_0)
    assert np.array_equal(back.numpy(), expected)


def test_q4_0_equals_llama_cpps_reference_byte_for_byte():
    w = weights()
    q, d = qz.quantize_q4_0(w)
    ref = reference_blocks(w, GGMLQuantizationType.Q4_0)
    assert np.array_equal(d.numpy().view(np.uint8).reshape(-1, 2), ref[:, :2])
    packed = q[:, :16] | (q[:, 16:] << 4)  # llama.cpp: weight j in the low nibble, j + 16 high
    assert np.array_equal(packed.numpy(), ref[:, 2:])
    back = qz.dequantize_q4_0(q, d, tuple(w.shape))
    expected = gguf_quants.dequantize(gguf_quants.quantize(w.numpy(), GGMLQuantizationType.Q4_0),
                                      GGMLQuantizationType.Q4_0)
    assert np.array_equal(back.numpy(), expected)


def test_q8_0_rounds_halves_away_from_zero_like_c():
    block = torch.zeros(1, 32)
    block[0, :6] = torch.tensor([127.0, 2.5, -3.5, 0.5, -0.5, 1.5])  # the scale is exactly 1
    q, d = qz.quantize_q8_0(block)
    assert d.item() == 1.0
    assert q[0, :6].tolist() == [127, 3, -4, 1, -1, 2]  # torch.round would give 2, -4, 0, 0, 2
    assert np.array_equal(q.numpy().view(np.uint8),
                          reference_blocks(block, GGMLQuantizationType.Q8_0)[:, 2:])


def test_q4_0_by_hand_on_one_block():
    block = torch.zeros(1, 32)
    block[0, :4] = torch.tensor([-2.0, 1.0, 0.5, -1.1])
    q, d = qz.quantize_q4_0(block)
    # the largest magnitude is -2.0, so d = -2 / -8 = 0.25 and -2.0 maps to q = 0 (-8 * 0.25)
    assert d.item() == 0.25
    assert q[0, :4].tolist() == [0, 12, 10, 4]  # trunc(x / 0.25 + 8.5): -1.1 -> trunc(4.1)
    assert q[0, 4:].tolist() == [8] * 28  # zeros
    assert qz.dequantize_q4_0(q, d, (1, 32))[0, :4].tolist() == [-2.0, 1.0, 0.5, -1.0]


def test_absmax_int8_per_row_scale_and_error_bound():
    w = weights(cols=50)
    q, scale = qz.absmax_quantize(w)
    assert q.dtype == torch.int8 and q.shape == w.shape and scale.shape == (6,)
    torch.testing.assert_close(scale, w.abs().amax(dim=1) / 127)
    assert q.abs().amax(dim=1).tolist()[1:] == [127] * 5  # the largest weight of a row is +-127
    error = (qz.absmax_dequantize(q, scale) - w).abs()
    assert (error <= scale[:, None] / 2 + 1e-7).all()  # rounding: at most half a step
    assert torch.equal(qz.absmax_dequantize(q, scale)[0, :32], torch.zeros(32))


@pytest.mark.parametrize("fmt, bound", [("int8", 0.02), ("q8_0", 0.01), ("q4_0", 0.2)])
def test_fake_quantize_keeps_shape_and_dtype_and_error_is_small(fmt, bound):
    w = weights().to(torch.bfloat16)
    out = qz.fake_quantize(w, fmt)
    assert out.shape == w.shape and out.dtype == torch.bfloat16
    relative = (out.float() - w.float()).norm() / w.float().norm()
    assert 0 < relative < bound


def test_quantize_model_changes_only_a_copys_linear_weights():
    torch.manual_seed(0)
    model = Llama(ModelArgs(dim=64, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=64,
                            multiple_of=32, max_seq_len=16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = qz.quantize_model(model, "q4_0", skip=("output",))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    after = small.state_dict()
    for key, value in before.items():
        linear = key.endswith((".wq.weight", ".wk.weight", ".wv.weight", ".wo.weight",
                               ".w1.weight", ".w2.weight", ".w3.weight"))
        assert torch.equal(after[key], value) != linear, key
        if linear:
            assert torch.equal(after[key], qz.fake_quantize(value, "q4_0"))
    tokens = torch.randint(0, 64, (1, 8))
    assert not torch.equal(small(tokens), model(tokens))


@pytest.mark.parametrize("call, error, words", [
    (lambda: qz.quantize_q8_0(torch.randn(4, 48)), ValueError, "48 is not a multiple of 32"),
    (lambda: qz.quantize_q4_0(torch.randn(64)), ValueError, "2-D weight"),
    (lambda: qz.absmax_quantize(torch.ones(2, 2, dtype=torch.int64)), TypeError,
     "floating-point"),
    (lambda: qz.absmax_quantize([[1.0]]), TypeError, "expects a weight tensor"),
    (lambda: qz.quantize_q8_0(torch.full((1, 32), float("nan"))), ValueError, "inf or nan"),
    (lambda: qz.fake_quantize(torch.randn(2, 32), "q2_k"), ValueError, "unknown format"),
    (lambda: qz.quantize_model(nn.Embedding(4, 4), "q8_0"), ValueError, "no nn.Linear"),
])
def test_bad_input_gets_a_clear_error(call, error, words):
    with pytest.raises(error, match=words):
        call()
