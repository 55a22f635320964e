"""Checks for the positions chapter: the sinusoidal encoding and rotary embeddings (RoPE)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import rope as ref
from ._core import Mistake, call, check, close, fail, match_mistakes

# --------------------------------------------------------------------------- sinusoidal


@check
def sinusoidal_positions(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(seq_len: int, dim: int, base: float = 10000.0) -> Tensor` against the reference."""
    cases: list[tuple[int, int, float | None]] = [
        (7, 16, None),
        (1, 4, None),
        (33, 64, None),
        (10, 8, 100.0),
        (5, 6, 1000.0),
    ]
    for seq_len, dim, base in cases:
        args = (seq_len, dim) if base is None else (seq_len, dim, base)
        used = 10000.0 if base is None else base
        label = f"seq_len={seq_len}, dim={dim}, base={used:g}"
        out = call(fn, *args)
        expected = ref.sinusoidal_positions(seq_len, dim, used)
        mistakes = _sinusoidal_mistakes(seq_len, dim, used)
        # The mistakes differ from the answer by 0.1 or more; the wrong exponent sign gives
        # angles near 1e4 radians, where float32 and float64 disagree by about 1e-3.
        match_mistakes(
            out, expected, mistakes, label, _sinusoidal_otherwise(out, dim), mistake_atol=5e-3
        )
        _expect_float32(out, label)
    return "equals the reference for 5 sizes and 3 bases: sin on even dims, cos on odd, float32"


def _angles(seq_len: int, rates: torch.Tensor, first: int = 0) -> torch.Tensor:
    """position * rate for positions first, first + 1, ..., in float64."""
    positions = torch.arange(first, first + seq_len, dtype=torch.float64)
    return torch.outer(positions, rates)


def _interleave(even: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
    """Put `even` in columns 0, 2, 4, ... and `odd` in columns 1, 3, 5, ..."""
    return torch.stack((even, odd), dim=-1).flatten(-2)


def _sinusoidal_mistakes(seq_len: int, dim: int, base: float) -> list[Mistake]:
    """Typical wrong sinusoidal tables for these arguments, each with the hint that names it."""
    pair = torch.arange(0, dim, 2, dtype=torch.float64)  # 2i
    angles = _angles(seq_len, base ** (-pair / dim))
    sin, cos = angles.sin(), angles.cos()
    interleave = "Interleave them: table[:, 0::2] = sin and table[:, 1::2] = cos."
    own_index = _angles(seq_len, base ** (-torch.arange(dim, dtype=torch.float64) / dim))
    own_index_table = torch.where(torch.arange(dim) % 2 == 0, own_index.sin(), own_index.cos())
    half_rates = base ** (-torch.arange(dim // 2, dtype=torch.float64) / dim)
    mistakes = [
        (
            _interleave(cos, sin),
            "sin and cos are swapped: even dimensions (0, 2, 4, ...) hold sin and odd ones "
            "hold cos. Use table[:, 0::2] = sin and table[:, 1::2] = cos.",
        ),
        (
            torch.cat((sin, cos), dim=-1),
            "the halves are concatenated [all sin | all cos]; the original encoding does not "
            f"split the vector in halves, it alternates sin and cos. {interleave}",
        ),
        (
            torch.cat((cos, sin), dim=-1),
            "the halves are concatenated [all cos | all sin]; the original encoding alternates "
            f"sin (even dimensions) and cos (odd dimensions). {interleave}",
        ),
        (
            (sin + cos).repeat_interleave(2, dim=-1),
            "sin and cos are summed; each dimension holds only one of them: sin on even "
            f"dimensions, cos on odd. {interleave}",
        ),
        (
            _interleave(_angles(seq_len, half_rates).sin(), _angles(seq_len, half_rates).cos()),
            "the exponent is i/dim, but it should be 2i/dim (i counts the pairs). Use "
            "base ** (torch.arange(0, dim, 2) / dim).",
        ),
        (
            own_index_table,
            "odd dimensions use their own index in the exponent. Dimension 2i + 1 must use "
            "the same rate as dimension 2i: base ** (2i / dim) for both.",
        ),
        (
            _interleave(*_sin_cos(_angles(seq_len, base ** (pair / dim)))),
            "the exponent has the wrong sign: positions must be divided by base ** (2i/dim), "
            "not multiplied. Later pairs should turn more slowly.",
        ),
        (
            _interleave(*_sin_cos(_angles(seq_len, base ** (-pair / dim), first=1))),
            "positions start at 1, but the first row is position 0: use torch.arange(seq_len).",
        ),
    ]
    if base != 10000.0:
        mistakes.append(
            (
                ref.sinusoidal_positions(seq_len, dim, 10000.0).double(),
                f"the `base` argument is ignored: your table uses 10000 but base={base:g} was "
                "passed. Use base in the rates: base ** (-torch.arange(0, dim, 2) / dim).",
            )
        )
    return mistakes


def _sin_cos(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sin and cos of the same angles."""
    return angles.sin(), angles.cos()


def _sinusoidal_otherwise(out: torch.Tensor, dim: int) -> str:
    """The hint for a wrong table that matches none of the known mistakes."""
    first_row = torch.tensor([0.0, 1.0] * (dim // 2))
    if isinstance(out, torch.Tensor) and out.shape[-1:] == (dim,) and out.dim() == 2:
        if not close(out[0], first_row):
            return (
                "Row 0 (position 0) should be [0, 1, 0, 1, ...], because sin(0) = 0 and cos(0) = 1."
            )
    return (
        "Expected table[p, 2i] = sin(p / base ** (2i/dim)) and "
        "table[p, 2i + 1] = cos(p / base ** (2i/dim))."
    )


# --------------------------------------------------------------------------- RoPE frequencies


@check
def rope_frequencies(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(head_dim: int, theta: float) -> Tensor` of shape (head_dim // 2,)."""
    for head_dim, theta in [(8, 10000.0), (64, 10000.0), (128, 500000.0), (16, 100.0), (2, 1e4)]:
        label = f"head_dim={head_dim}, theta={theta:g}"
        out = call(fn, head_dim, theta)
        if isinstance(out, torch.Tensor) and out.shape == (head_dim,) and head_dim > 0:
            fail(
                f"with {label} the result has {head_dim} entries, one per feature; RoPE turns "
                f"pairs of features, so it needs head_dim // 2 = {head_dim // 2} frequencies. "
                "Use torch.arange(0, head_dim, 2)."
            )
        expected = ref.rope_frequencies(head_dim, theta)
        otherwise = (
            "The first pair should turn 1 radian per position (theta ** 0), and the frequency "
            "for pair i is 1 / theta ** (2i / head_dim)."
        )
        # Frequencies span many orders of magnitude, so compare them relatively.
        match_mistakes(
            out,
            expected,
            _frequency_mistakes(head_dim, theta),
            label,
            otherwise,
            atol=0.0,
            rtol=1e-5,
        )
        _expect_float32(out, label)
    return "equals theta ** (-2i / head_dim) for 5 sizes and 3 thetas, length head_dim // 2"


def _frequency_mistakes(head_dim: int, theta: float) -> list[Mistake]:
    """Typical wrong frequency vectors for these arguments, each with the hint that names it."""
    pair = torch.arange(0, head_dim, 2, dtype=torch.float64)  # 2i
    mistakes = [
        (
            theta ** (-pair / 2 / head_dim),
            "the exponent is i/head_dim, but it should be 2i/head_dim (i counts the pairs). "
            "Use theta ** (torch.arange(0, head_dim, 2) / head_dim).",
        ),
        (
            theta ** (pair / head_dim),
            "the exponent has the wrong sign: the frequencies are theta ** (-2i/head_dim), "
            "that is 1 / theta ** (2i/head_dim), so they fall from 1 towards 1/theta.",
        ),
        (
            torch.as_tensor(1.0, dtype=torch.float64) / theta**pair / head_dim,
            "the exponent lost its parentheses: write 1 / theta ** (torch.arange(0, head_dim, "
            "2) / head_dim), so the division by head_dim happens inside the exponent.",
        ),
        (
            head_dim / theta**pair,
            "the exponent lost its parentheses: write 1 / theta ** (torch.arange(0, head_dim, "
            "2) / head_dim), so the division by head_dim happens inside the exponent.",
        ),
    ]
    if theta != 10000.0:
        mistakes.append(
            (
                ref.rope_frequencies(head_dim, 10000.0).double(),
                f"the `theta` argument is ignored: your frequencies use 10000 but theta={theta:g} "
                "was passed (Llama 3 uses 500000).",
            )
        )
    return mistakes


# --------------------------------------------------------------------------- apply_rope


@check
def apply_rope(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(x, start_pos, theta)` rotates interleaved pairs of x (batch, seq, heads, dim)."""
    gen = torch.Generator().manual_seed(0)
    cases = [
        ((1, 5, 2, 8), 0, 10000.0, torch.float32),
        ((2, 7, 3, 16), 3, 10000.0, torch.float32),
        ((3, 1, 4, 8), 11, 500000.0, torch.float32),
        ((2, 6, 2, 8), 0, 100.0, torch.float32),
        ((2, 9, 3, 32), 5, 500000.0, torch.float32),
        ((2, 5, 2, 8), 2, 10000.0, torch.bfloat16),
    ]
    for shape, start_pos, theta, dtype in cases:
        x = torch.randn(shape, generator=gen).to(dtype)
        label = f"x of shape {shape} ({_name(dtype)}), start_pos={start_pos}, theta={theta:g}"
        x_in = x.clone()
        out = call(fn, x_in, start_pos, theta)
        if not torch.equal(x_in, x):
            fail(
                "your function changed x in place (e.g. x[..., 0::2] = ...). Build the result "
                "in a new tensor (or work on x.clone()) and leave x as it is."
            )
        low = dtype != torch.float32
        if isinstance(out, torch.Tensor) and out.dtype != x.dtype:
            fail(
                f"with {label} the result has dtype {_name(out.dtype)}; it must keep x's dtype. "
                "Rotate in float32 (x.float()) if you like, then cast back with .type_as(x)."
            )
        match_mistakes(
            out,
            ref.apply_rope(x, start_pos, theta),
            _rope_mistakes(x, start_pos, theta),
            label,
            _rope_otherwise(out, x, start_pos),
            atol=2e-2 if low else 1e-5,
            rtol=2e-2 if low else 1e-4,
        )
    return (
        "equals the reference on 6 inputs (batch > 1, start_pos > 0, 3 thetas, bfloat16): "
        "interleaved pairs, dtype kept"
    )


def _rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x (batch, seq, heads, head_dim) by angles (seq, head_dim/2)."""
    pairs = x.double().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


def _rope_mistakes(x: torch.Tensor, start_pos: int, theta: float) -> list[Mistake]:
    """Typical wrong RoPE results for these arguments, each with the hint that names it."""
    seq_len, head_dim = x.shape[1], x.shape[-1]
    pair = torch.arange(0, head_dim, 2, dtype=torch.float64)
    freqs = theta ** (-pair / head_dim)
    angles = _angles(seq_len, freqs, start_pos)
    mistakes = [
        (
            ref.apply_rope_half(x.double(), start_pos, theta),
            "you rotated in the rotate-half convention (Hugging Face): feature i paired with "
            "i + head_dim/2. This exercise uses Meta's convention of interleaved pairs "
            "(0, 1), (2, 3), ...: take x[..., 0::2] and x[..., 1::2] as the two parts of "
            "each pair.",
        ),
        (
            _rotate(x, -angles),
            "the rotation goes the wrong way (the sign of sin is flipped). For a pair (a, b) "
            "the result is (a*cos - b*sin, a*sin + b*cos).",
        ),
        (
            _rotate(x, _angles(seq_len, theta ** (-pair / 2 / head_dim), start_pos)),
            "the frequencies use i/head_dim instead of 2i/head_dim in the exponent. Check your "
            "rope_frequencies: theta ** (-torch.arange(0, head_dim, 2) / head_dim).",
        ),
        (
            _rotate(x, _angles(seq_len, freqs, start_pos + 1)),
            "positions are off by one: the first token of x is at position start_pos, "
            "not start_pos + 1.",
        ),
        (
            _rotate(x.transpose(1, 2), _angles(x.shape[2], freqs, start_pos)).transpose(1, 2),
            "the positions run along the heads axis. x is (batch, seq, n_heads, head_dim): "
            "positions run along axis 1, so the angles must have shape (1, seq, 1, head_dim/2).",
        ),
    ]
    if start_pos:
        mistakes.append(
            (
                _rotate(x, _angles(seq_len, freqs, 0)),
                f"start_pos is ignored: your positions start at 0, but start_pos={start_pos} was "
                "passed. Token t of x sits at position start_pos + t: use "
                "torch.arange(start_pos, start_pos + seq_len).",
            )
        )
    if theta != 10000.0:
        mistakes.append(
            (
                _rotate(x, _angles(seq_len, 10000.0 ** (-pair / head_dim), start_pos)),
                f"the `theta` argument is ignored: your angles use 10000 but theta={theta:g} "
                "was passed.",
            )
        )
    return mistakes


def _rope_otherwise(out: object, x: torch.Tensor, start_pos: int) -> str:
    """The hint for a wrong RoPE result that matches none of the known mistakes."""
    if isinstance(out, torch.Tensor) and out.shape == x.shape:
        lengths = out.double().unflatten(-1, (-1, 2)).norm(dim=-1)
        wanted = x.double().unflatten(-1, (-1, 2)).norm(dim=-1)
        if not close(lengths, wanted, atol=1e-2, rtol=1e-2):
            return (
                "The length of each pair (x[2i], x[2i+1]) changed, but a rotation keeps it. "
                "For a pair (a, b) at angle t: (a*cos t - b*sin t, a*sin t + b*cos t)."
            )
        if start_pos == 0 and not close(out[:, 0], x[:, 0], atol=1e-2, rtol=1e-2):
            return "Position 0 has angle 0, so the first token must come out unchanged."
    return (
        "Pair i of the token at position p turns by the angle p * theta ** (-2i / head_dim); "
        "pairs are (x[..., 0::2], x[..., 1::2])."
    )


# --------------------------------------------------------------------------- helpers


def _expect_float32(out: torch.Tensor, label: str) -> None:
    """Fail unless a table of positions or frequencies is float32."""
    if out.dtype != torch.float32:
        fail(
            f"with {label} the values are right but the dtype is {_name(out.dtype)}; "
            "return float32 (e.g. torch.arange(..., dtype=torch.float32)) like the model's "
            "weights."
        )


def _name(dtype: torch.dtype) -> str:
    """The dtype as a learner writes it: float16, not torch.float16."""
    return str(dtype).removeprefix("torch.")
