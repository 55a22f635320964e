"""Position information: the original sinusoidal encoding, and Llama's rotary embedding (RoPE).

Meta's reference rotates interleaved pairs (0, 1), (2, 3), ... of each head; Hugging Face rotates
pairs (i, i + head_dim/2) ("rotate half"). The two agree once the rows of wq and wk are permuted,
which `interleaved_to_half` and `half_to_interleaved` do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from einops import rearrange

from ._validate import (
    as_int,
    is_number,
    require_finite,
    require_float,
    require_positive_int,
    require_tensor,
)

LLAMA3_SCALING_KEYS = (
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
)


def sinusoidal_positions(seq_len: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """The original Transformer's encoding: sin on even dimensions, cos on odd, shape (seq, dim)."""
    _require_count("sinusoidal_positions", "seq_len", seq_len)
    require_positive_int("sinusoidal_positions", "dim", dim)
    require_finite("sinusoidal_positions", "base", base, 0.0, strict=True)
    if dim % 2:
        raise ValueError(f"sinusoidal_positions needs an even dim, got {dim}.")
    position = torch.arange(seq_len, dtype=torch.float32)[:, None]
    rates = base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    table = torch.zeros(seq_len, dim)
    table[:, 0::2] = torch.sin(position * rates)
    table[:, 1::2] = torch.cos(position * rates)
    return table


def rope_frequencies(
    head_dim: int, theta: float = 10000.0, scaling: Mapping[str, Any] | None = None
) -> torch.Tensor:
    """Rotation speed of each pair, theta ** (-2i / head_dim), in radians per position."""
    require_positive_int("rope_frequencies", "head_dim", head_dim)
    if not (is_number(theta) and 0 < float(theta) < math.inf):
        raise ValueError(
            f"rope_theta (the RoPE base) must be a finite number > 0, got {theta!r}; "
            "Llama 1 and 2 use 10000.0, Llama 3 uses 500000.0."
        )
    if head_dim % 2:
        raise ValueError(
            f"RoPE rotates pairs of features, so head_dim must be even; got {head_dim}. "
            "Choose dim and n_heads so that dim // n_heads is even."
        )
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    return apply_llama3_scaling(freqs, scaling) if scaling else freqs


def apply_llama3_scaling(freqs: torch.Tensor, scaling: Mapping[str, Any]) -> torch.Tensor:
    """Llama 3.1 context extension: slow pairs divided by `factor`, fast kept, blend between."""
    require_float("apply_llama3_scaling", "freqs", freqs)
    _check_llama3_scaling(scaling)
    factor = float(scaling["factor"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_context = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / freqs
    low_freq_wavelen, high_freq_wavelen = old_context / low, old_context / high
    smooth = (old_context / wavelen - low) / (high - low)
    blended = (1 - smooth) * freqs / factor + smooth * freqs
    scaled = torch.where(wavelen > low_freq_wavelen, freqs / factor, freqs)
    medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(medium, blended, scaled)


def _check_llama3_scaling(scaling: Any) -> None:
    if not isinstance(scaling, Mapping):
        raise TypeError(
            f"rope_scaling must be a dict with keys {list(LLAMA3_SCALING_KEYS)} (or None), "
            f"got {type(scaling).__name__}."
        )
    missing = [key for key in LLAMA3_SCALING_KEYS if key not in scaling]
    if missing:
        raise ValueError(
            f"rope_scaling is missing {missing}; "
            f"Llama 3.1 scaling needs {list(LLAMA3_SCALING_KEYS)}."
        )
    for key in LLAMA3_SCALING_KEYS:
        require_finite("rope_scaling", key, scaling[key], 0.0, strict=True)
    if not float(scaling["high_freq_factor"]) > float(scaling["low_freq_factor"]):
        raise ValueError(
            f"rope_scaling: high_freq_factor={scaling['high_freq_factor']!r} must be larger than "
            f"low_freq_factor={scaling['low_freq_factor']!r} (Llama 3.1 uses 4.0 and 1.0)."
        )


def _require_count(fn: str, name: str, value: Any) -> int:
    number = as_int(value)
    if number is None or number < 0:
        raise ValueError(f"{fn}: {name} must be an int >= 0, got {value!r}.")
    return number


def rope_cos_sin(
    head_dim: int,
    seq_len: int,
    theta: float = 10000.0,
    start_pos: int = 0,
    scaling: Mapping[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the angle position * frequency, each of shape (seq_len, head_dim // 2)."""
    _require_count("rope_cos_sin", "seq_len", seq_len)
    _require_count("rope_cos_sin", "start_pos", start_pos)
    freqs = rope_frequencies(head_dim, theta, scaling)
    positions = torch.arange(start_pos, start_pos + seq_len, dtype=torch.float32)
    angles = torch.outer(positions, freqs)
    return torch.cos(angles), torch.sin(angles)


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x (batch, seq, heads, head_dim) by angles (seq, head_dim/2)."""
    _check_rotation_inputs("rotate_pairs", x, cos, sin)
    return _rotate_pairs(x, cos, sin)


def _rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """rotate_pairs after the dtype checks (Attention.forward makes them once for q and k)."""
    if (
        x.dim() != 4
        or x.shape[-1] % 2
        or cos.shape != (x.shape[1], x.shape[-1] // 2)
        or sin.shape != cos.shape
    ):
        raise ValueError(
            f"rotate_pairs: x has shape {tuple(x.shape)} (batch, seq, heads, head_dim) but "
            f"cos/sin have shapes {tuple(cos.shape)}/{tuple(sin.shape)}; they must be "
            f"(seq, head_dim // 2) = ({x.shape[1]}, {x.shape[-1] // 2}) and head_dim even."
        )
    pairs = x.float().unflatten(-1, (-1, 2))  # (b, s, h, head_dim / 2, 2)
    # MPS lacks complex numbers, and torch.compile's code generator does not handle them
    if x.device.type != "mps" and not torch.compiler.is_compiling():
        # Pair (x0, x1) as the complex number x0 + i x1: multiplying by cos + i sin gives
        # (x0 cos - x1 sin) + i (x0 sin + x1 cos), the rotation below, in one faster operation.
        if cos.dtype not in (torch.float32, torch.float64):  # torch.complex's part types
            cos, sin = cos.float(), sin.float()
        rotation = torch.complex(cos, sin)[:, None, :]  # (seq, 1, head_dim / 2)
        rotated = torch.view_as_real(torch.view_as_complex(pairs.contiguous()) * rotation)
        return rotated.flatten(-2).type_as(x)  # (b, s, h, head_dim)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[:, None, :], sin[:, None, :]  # (seq, 1, head_dim / 2), broadcast over b and h
    rotated = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)  # (b, s, h, head_dim)


def apply_rope(
    x: torch.Tensor,
    start_pos: int = 0,
    theta: float = 10000.0,
    scaling: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Apply RoPE to x (batch, seq, n_heads, head_dim), Meta's interleaved-pair convention."""
    _check_rope_input("apply_rope", x)
    cos, sin = rope_cos_sin(x.shape[-1], x.shape[1], theta, start_pos, scaling)
    return rotate_pairs(x, cos.to(x.device), sin.to(x.device))


def apply_rope_half(
    x: torch.Tensor,
    start_pos: int = 0,
    theta: float = 10000.0,
    scaling: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Apply RoPE in Hugging Face's rotate-half convention: feature i pairs with i + head_dim/2."""
    _check_rope_input("apply_rope_half", x)
    cos, sin = rope_cos_sin(x.shape[-1], x.shape[1], theta, start_pos, scaling)
    cos = torch.cat((cos, cos), dim=-1)[None, :, None, :].to(x.device)  # (1, seq, 1, head_dim)
    sin = torch.cat((sin, sin), dim=-1)[None, :, None, :].to(x.device)
    first, second = x.float().chunk(2, dim=-1)
    rotated_half = torch.cat((-second, first), dim=-1)
    return (x.float() * cos + rotated_half * sin).type_as(x)


def _check_rope_input(fn: str, x: torch.Tensor) -> None:
    require_float(fn, "x", x)
    if x.dim() != 4:
        raise ValueError(
            f"{fn} expects x of shape (batch, seq, n_heads, head_dim), got {tuple(x.shape)}; "
            "for a single sequence use x[None], for a single head x[:, :, None]."
        )


def _check_rotation_inputs(fn: str, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    require_float(fn, "x", x)
    require_float(fn, "cos", cos)
    require_float(fn, "sin", sin)
    if cos.dtype != sin.dtype:
        raise TypeError(
            f"{fn}: cos is {cos.dtype} but sin is {sin.dtype}; they must share one dtype. "
            "Make both with one call of rope_cos_sin (or convert with sin.to(cos.dtype))."
        )


def interleaved_to_half(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Permute the rows of a Meta wq/wk (n_heads*head_dim, dim) for the rotate-half convention."""
    _check_rows(weight, n_heads)
    # within each head, row 2i + p moves to p * head_dim/2 + i
    return rearrange(weight, "(h i two) d -> (h two i) d", h=n_heads, two=2)


def half_to_interleaved(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo `interleaved_to_half`: rows of a Hugging Face q_proj/k_proj back to Meta's order."""
    _check_rows(weight, n_heads)
    return rearrange(weight, "(h two i) d -> (h i two) d", h=n_heads, two=2)


def _check_rows(weight: torch.Tensor, n_heads: int) -> None:
    require_tensor("interleaved_to_half / half_to_interleaved", "weight", weight)
    require_positive_int("interleaved_to_half / half_to_interleaved", "n_heads", n_heads)
    if weight.dim() != 2:
        raise ValueError(
            f"expected a 2-D weight (n_heads * head_dim, dim) such as wq.weight, got shape "
            f"{tuple(weight.shape)}."
        )
    rows = weight.shape[0]
    if rows % n_heads or (rows // n_heads) % 2:
        raise ValueError(
            f"a weight with {rows} rows cannot be split into {n_heads} heads of even size; "
            "for wk pass n_kv_heads, not n_heads."
        )
