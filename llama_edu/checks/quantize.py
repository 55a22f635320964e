"""Check for the quantization exercise: absmax int8 with one scale per output channel."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._core import call, check, fail


def _cases() -> list[tuple[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 40, generator=gen)
    w[1] *= 10  # rows of very different sizes: one scale per row matters
    w[2, 3] = -9.0  # a row whose largest magnitude is negative
    halves = torch.zeros(2, 8)
    halves[0] = torch.tensor([127.0, 2.5, -3.5, 0.5, 1.5, -0.5, 0.0, 10.0])  # scale exactly 1
    halves[1] = torch.tensor([-127.0, 6.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    zero = torch.zeros(3, 5)
    zero[1] = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0])
    return [("a 6 x 40 weight with rows of different sizes", w),
            ("rows whose scaled weights end in .5 (ties)", halves),
            ("a weight with rows of zeros", zero)]


@check
def absmax_quantize(fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> str:
    """Check `fn(weight) -> (q, scale)`: int8 q, one scale per row, max |row| / 127."""
    for label, w in _cases():
        w_in = w.clone()
        out = call(fn, w_in)
        if not torch.equal(w_in, w):
            fail("your function changed the weight in place; compute new tensors instead.")
        if not (isinstance(out, tuple) and len(out) == 2):
            fail(f"with {label} the result should be a pair (q, scale), got {type(out).__name__}")
        q, scale = out
        if not isinstance(q, torch.Tensor) or not isinstance(scale, torch.Tensor):
            fail(f"with {label} q and scale should be tensors, got {type(q).__name__} and "
                 f"{type(scale).__name__}")
        expected_scale = w.abs().amax(dim=1) / 127
        if tuple(scale.shape) != (w.shape[0],):
            if scale.numel() == 1:
                fail(f"with {label} you used one scale for the whole matrix. Give each output "
                     f"channel (row) its own: w.abs().amax(dim=1) / 127, shape ({w.shape[0]},). "
                     "A row of small weights then keeps its precision.")
            if tuple(scale.shape) == (w.shape[0], 1):
                fail(f"with {label} scale has shape {tuple(scale.shape)}; return one number per "
                     f"row, shape ({w.shape[0]},) (squeeze the kept dimension).")
            fail(f"with {label} scale has shape {tuple(scale.shape)}; expected one per row, "
                 f"({w.shape[0]},). Did you take the max over dim=0 (columns)?")
        scale = scale.float()
        if not torch.allclose(scale, expected_scale, rtol=1e-5, atol=0):
            for wrong, message in (
                (w.amax(dim=1) / 127, "you took the largest weight, not the largest magnitude: "
                 "a row whose extreme is negative gets a wrong scale. Use w.abs().amax(dim=1)."),
                (w.abs().amax(dim=1) / 128, "the scale divides by 128; int8 holds -128 .. 127, "
                 "but absmax uses the symmetric range -127 .. 127, so divide by 127."),
                (w.abs().amax(dim=1) / 255, "the scale divides by 255, as for 8 unsigned bits; "
                 "absmax is symmetric around 0: divide by 127."),
                (127 / w.abs().amax(dim=1), "you returned 127 / max, the factor that maps "
                 "weights to integers; return its inverse, the step between two integers: "
                 "max / 127 (so that w is about q * scale)."),
            ):
                if torch.allclose(scale, wrong, rtol=1e-5, atol=0):
                    fail(f"with {label}: {message}")
            fail(f"with {label} the scales are {scale.tolist()}; expected max |row| / 127: "
                 f"{expected_scale.tolist()}.")
        if q.dtype != torch.int8:
            fail(f"with {label} q has dtype {str(q.dtype).removeprefix('torch.')}; store it as "
                 "torch.int8 (.to(torch.int8)): that is what saves the memory.")
        if tuple(q.shape) != tuple(w.shape):
            fail(f"with {label} q has shape {tuple(q.shape)}; it keeps the weight's shape "
                 f"{tuple(w.shape)}.")
        exact = w / torch.where(expected_scale == 0, torch.ones_like(expected_scale),
                                expected_scale)[:, None]
        away = torch.sign(exact) * torch.floor(exact.abs() + 0.5)  # C's roundf
        even = torch.round(exact)  # torch's: halves to the even integer
        ok = (q.float() == away) | (q.float() == even)
        if bool(ok.all()):
            continue
        zero_rows = expected_scale == 0
        if bool(zero_rows.any()) and bool((q[zero_rows] != 0).any()):
            fail(f"with {label}: a row of zeros has scale 0, and 0 / 0 is nan, which becomes an "
                 "arbitrary integer. Guard the division, e.g. divide by "
                 "torch.where(scale == 0, 1, scale), so that zero rows store zeros.")
        if torch.equal(q.float(), torch.trunc(exact)):
            fail(f"with {label}: the integers were cut toward zero (.to(torch.int8) alone "
                 "truncates). Round first: torch.round(w / scale).")
        if torch.equal(q.float(), torch.floor(exact)):
            fail(f"with {label}: the integers were rounded down (floor); round to the nearest: "
                 "torch.round(w / scale).")
        fail(f"with {label} q differs from round(w / scale) at {int((~ok).sum())} places; "
             "compute q = torch.round(w / scale[:, None]).to(torch.int8).")
    return ("one scale per row (max |row| / 127), int8 integers rounded to the nearest (halves "
            "either way), zero rows kept, on 3 weights")
