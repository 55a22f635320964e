"""Quantization from scratch: absmax int8 per output channel, and llama.cpp's Q8_0 and Q4_0.

A weight matrix W (out_features, in_features) is stored with fewer bits and multiplied back
("dequantized") when used:

* **absmax int8, per output channel**: each row gets one scale, max |row| / 127, and its weights
  become integers in [-127, 127];
* **Q8_0** (llama.cpp): each block of 32 consecutive weights of a row gets its own scale,
  max |block| / 127, stored as float16: 34 bytes for 32 weights, 8.5 bits a weight;
* **Q4_0** (llama.cpp): blocks of 32 weights, 4 bits each. The scale is d = m / -8, where m is
  the block's weight of largest magnitude with its sign, and a weight x is stored as the
  integer q = trunc(x / d + 8.5) clamped to [0, 15], standing for (q - 8) * d: 18 bytes for
  32 weights, 4.5 bits a weight.

The block formats round exactly as llama.cpp's reference code (ggml-quants.c) does: Q8_0 rounds
half away from zero, the scale used for rounding is the float32 one, and the stored scale is its
float16 value (tests compare every byte with the `gguf` package's implementation).
`quantize_model` returns a copy of a model whose linear layers compute with the dequantized
weights, so that its loss and its generations can be compared with the original's.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = [
    "BITS_PER_WEIGHT",
    "BLOCK_SIZE",
    "FORMATS",
    "absmax_dequantize",
    "absmax_quantize",
    "dequantize_q4_0",
    "dequantize_q8_0",
    "fake_quantize",
    "quantize_model",
    "quantize_q4_0",
    "quantize_q8_0",
]

BLOCK_SIZE = 32
"""Weights per block in Q8_0 and Q4_0."""

FORMATS = ("int8", "q8_0", "q4_0")
"""The formats `fake_quantize` and `quantize_model` accept."""

BITS_PER_WEIGHT = {"fp32": 32.0, "bf16": 16.0, "int8": 8.0, "q8_0": 8.5, "q4_0": 4.5}
"""Storage bits per weight (int8 leaves out its one float32 scale per row)."""


def _float_matrix(fn: str, weight: torch.Tensor) -> torch.Tensor:
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{fn} expects a weight tensor, got {type(weight).__name__}; pass "
                        "layer.weight")
    if not weight.is_floating_point():
        raise TypeError(f"{fn} expects floating-point weights, got {weight.dtype}; weights to "
                        "quantize are float32, float16 or bfloat16")
    if weight.dim() != 2 or weight.numel() == 0:
        raise ValueError(f"{fn} expects a non-empty 2-D weight (out_features, in_features), got "
                         f"shape {tuple(weight.shape)}")
    if not torch.isfinite(weight).all():
        raise ValueError(f"{fn}: the weight holds inf or nan, which no scale can represent")
    return weight.detach().float()


def _blocks(fn: str, weight: torch.Tensor) -> torch.Tensor:
    w = _float_matrix(fn, weight)
    if w.shape[1] % BLOCK_SIZE:
        raise ValueError(
            f"{fn}: each row is cut into blocks of {BLOCK_SIZE} weights, but the weight has "
            f"shape {tuple(weight.shape)} and {w.shape[1]} is not a multiple of {BLOCK_SIZE}. "
            f"Use absmax_quantize (one scale per row) for this layer, or leave it in float."
        )
    return w.reshape(-1, BLOCK_SIZE)  # (rows * in_features / 32, 32): one block per row


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    """C's roundf: halves go away from zero (torch.round sends them to the even integer)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def _inverse(d: torch.Tensor) -> torch.Tensor:
    """1 / d, and 0 where d is 0 (a block of zeros stores zeros)."""
    return torch.where(d == 0, torch.zeros_like(d), 1.0 / d)


# --------------------------------------------------------------------------------------------
# absmax int8, one scale per output channel
# --------------------------------------------------------------------------------------------


def absmax_quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, scale): int8 q of weight's shape and one float32 scale per row, max |row| / 127."""
    w = _float_matrix("absmax_quantize", weight)
    scale = w.abs().amax(dim=1) / 127  # (out_features,)
    q = _round_half_away(w * _inverse(scale)[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def absmax_dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float32 weights that int8 q and its per-row scales stand for."""
    return q.float() * scale[:, None]


# --------------------------------------------------------------------------------------------
# llama.cpp's block formats
# --------------------------------------------------------------------------------------------


def quantize_q8_0(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, d): int8 q of shape (n_blocks, 32) and one float16 scale d per block, as Q8_0."""
    blocks = _blocks("quantize_q8_0", weight)
    d = blocks.abs().amax(dim=1, keepdim=True) / 127  # (n_blocks, 1), float32
    q = _round_half_away(blocks * _inverse(d)).to(torch.int8)
    return q, d.squeeze(1).half()


def dequantize_q8_0(q: torch.Tensor, d: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The float32 weights of `shape` that Q8_0 blocks q with scales d stand for."""
    return (q.float() * d.float()[:, None]).reshape(shape)


def quantize_q4_0(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, d): q in 0..15 (uint8, (n_blocks, 32)) and one float16 scale d per block, as Q4_0."""
    blocks = _blocks("quantize_q4_0", weight)
    top = blocks.abs().argmax(dim=1, keepdim=True)
    d = blocks.gather(1, top) / -8  # the signed largest weight maps to -8 (n_blocks, 1)
    q = torch.trunc(blocks * _inverse(d) + 8.5).clamp(0, 15).to(torch.uint8)
    return q, d.squeeze(1).half()


def dequantize_q4_0(q: torch.Tensor, d: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The float32 weights of `shape` that Q4_0 blocks q with scales d stand for."""
    return ((q.float() - 8) * d.float()[:, None]).reshape(shape)


# --------------------------------------------------------------------------------------------
# Models with quantized weights
# --------------------------------------------------------------------------------------------


def fake_quantize(weight: torch.Tensor, fmt: str) -> torch.Tensor:
    """The weight after a round trip through `fmt` ("int8", "q8_0" or "q4_0"), in its dtype."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else ()
    if fmt == "int8":
        out = absmax_dequantize(*absmax_quantize(weight))
    elif fmt == "q8_0":
        out = dequantize_q8_0(*quantize_q8_0(weight), shape)
    else:
        out = dequantize_q4_0(*quantize_q4_0(weight), shape)
    return out.to(weight.dtype)


def quantize_model(model: nn.Module, fmt: str, skip: tuple[str, ...] = ()) -> nn.Module:
    """A copy of `model` whose nn.Linear weights went through `fmt`; names ending in `skip` stay.

    The copy computes in float as before, with the weights the format can store: its loss and
    generations show what the format costs. The embedding table is a lookup, not a Linear, and
    stays as it is (llama.cpp often quantizes it too), unless it is tied to the output layer's
    weight, which is then quantized with it.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = copy.deepcopy(model)
    linears = {name: m for name, m in out.named_modules() if isinstance(m, nn.Linear)}
    if not linears:
        raise ValueError("the model has no nn.Linear layer to quantize")
    with torch.no_grad():
        for name, layer in linears.items():
            if any(name == s or name.endswith("." + s) for s in skip):
                continue
            layer.weight.copy_(fake_quantize(layer.weight, fmt))
    return out
