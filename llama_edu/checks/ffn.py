"""Checks for the feed-forward chapter: SwiGLU and the rule for its hidden size."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import ffn as ref
from ._core import Mistake, call, check, close, fail

_LAYOUT = (
    "The weights use nn.Linear's layout (out_features, in_features): w1 and w3 are "
    "(hidden, dim) and w2 is (dim, hidden), so w1 x is x @ w1.T, or F.linear(x, w1)."
)


# --------------------------------------------------------------------------- SwiGLU


@check
def swiglu(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(x, w1, w2, w3)` against w2(silu(w1 x) * w3 x), weights as in nn.Linear."""
    gen = torch.Generator().manual_seed(0)
    # (shape of x, hidden). Square weights first (hidden == dim): there, weights used
    # transposed still run, so that mistake gets its name; later cases would only crash.
    for shape, hidden in [((2, 5, 6), 6), ((2, 3, 8), 12), ((4, 16), 40), ((2, 1, 8), 20)]:
        dim = shape[-1]
        x = torch.randn(shape, generator=gen)
        w1 = torch.randn(hidden, dim, generator=gen) / math.sqrt(dim)
        w2 = torch.randn(dim, hidden, generator=gen) / math.sqrt(hidden)
        w3 = torch.randn(hidden, dim, generator=gen) / math.sqrt(dim)
        label = f"x of shape {shape}, hidden={hidden}"
        inputs = (x, w1, w2, w3)
        copies = [t.clone() for t in inputs]
        try:
            out = call(fn, *copies)
        except NotImplementedError:
            raise
        except Exception as failure:  # call() already described the crash
            fail(f"with {label}: {failure}\n{_LAYOUT}")
        if any(not torch.equal(a, b) for a, b in zip(copies, inputs, strict=True)):
            fail("your function changed x or a weight in place. Leave the inputs as they are.")
        if not isinstance(out, torch.Tensor):
            fail(f"the result should be a torch.Tensor, but it is {type(out).__name__}.")
        expected = ref.swiglu(x, w1, w2, w3)
        if close(out, expected):
            continue
        for wrong, message in _swiglu_mistakes(x, w1, w2, w3):
            if close(out, wrong):
                fail(f"with {label}: {message}")
        if out.shape != expected.shape:
            fail(
                f"with {label} the result has shape {tuple(out.shape)}; expected "
                f"{tuple(expected.shape)}, the shape of x. {_LAYOUT}"
            )
        fail(
            f"with {label} the result differs from w2(silu(w1 x) * w3 x). Project x with w1 "
            "(the gate) and with w3 (the value), put SiLU on the gate only, multiply the two "
            f"element by element, then project back with w2. {_LAYOUT}"
        )
    return "equals w2(silu(w1 x) * w3 x) on 4 inputs (batch > 1, 2-D and 3-D x, hidden == dim)"


def _swiglu_mistakes(
    x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor
) -> list[Mistake]:
    """Typical wrong SwiGLU results on these inputs, each with the hint that names it."""
    x, w1, w2, w3 = x.double(), w1.double(), w2.double(), w3.double()
    gate, up = F.linear(x, w1), F.linear(x, w3)

    def down(h: torch.Tensor) -> torch.Tensor:
        """Project back to dim with w2."""
        return F.linear(h, w2)

    activation = "SwiGLU uses SiLU, x * sigmoid(x) (F.silu), on the gate w1 x."
    mistakes = [
        (
            down(F.silu(up) * gate),
            "w1 and w3 are swapped: SiLU goes on w1 x (the gate), and w3 x (the up "
            "projection) is multiplied in without an activation.",
        ),
        (down(F.relu(gate) * up), f"you used ReLU instead of SiLU. {activation}"),
        (down(F.gelu(gate) * up), f"you used GELU instead of SiLU. {activation}"),
        (
            down(F.gelu(gate, approximate="tanh") * up),
            f"you used GELU (tanh form) instead of SiLU. {activation}",
        ),
        (
            down(torch.sigmoid(gate) * up),
            "you used sigmoid instead of SiLU: SiLU is x * sigmoid(x) (F.silu), not sigmoid(x).",
        ),
        (
            down(F.silu(gate)),
            "the gate is missing: w2(silu(w1 x)) leaves out w3. Multiply silu(w1 x) by w3 x "
            "element by element before w2.",
        ),
        (
            down(F.silu(gate) + up),
            "silu(w1 x) and w3 x are added; SwiGLU multiplies them element by element.",
        ),
        (
            down(F.silu(gate * up)),
            "SiLU is applied to the product; apply it to w1 x only: silu(w1 x) * w3 x.",
        ),
        (
            F.silu(gate) * up,
            "w2 is missing at the end: the output is w2(silu(w1 x) * w3 x), back in dim.",
        ),
    ]
    if w1.shape[0] == w1.shape[1]:  # only square weights run when used transposed
        for t13, t2 in [(True, True), (True, False), (False, True)]:
            a, c = (w1.T, w3.T) if t13 else (w1, w3)
            b = w2.T if t2 else w2
            mistakes.append(
                (
                    F.linear(F.silu(F.linear(x, a)) * F.linear(x, c), b),
                    f"the weights are used transposed (x @ w instead of x @ w.T). {_LAYOUT}",
                )
            )
    return mistakes


# --------------------------------------------------------------------------- hidden size


_KNOWN_MODELS = [
    ((4096, 256, None), "Llama 2 7B", 11008),
    ((5120, 256, None), "Llama 2 13B", 13824),
    ((4096, 1024, 1.3), "Llama 3 8B", 14336),
    ((8192, 4096, 1.3), "Llama 2 70B / Llama 3 70B", 28672),
    ((2048, 256, 1.5), "Llama 3.2 1B", 8192),
    ((3072, 256, 1.0), "Llama 3.2 3B", 8192),
    ((8192, 256, 1.0), "Code Llama 34B", 22016),
    ((16384, 4096, 1.2), "Llama 3.1 405B", 53248),
]

_TINY: list[tuple[int, int, float | None]] = [
    (1, 1, None),
    (3, 2, None),
    (5, 4, None),
    (10, 3, None),
    (64, 16, None),
    (6, 4, 0.5),
    (7, 8, 1.5),
    (96, 32, 1.3),
]


@check
def ffn_hidden_dim(fn: Callable[..., int]) -> str:
    """Check `fn(dim, multiple_of, ffn_dim_multiplier=None) -> int` on real and tiny configs."""
    configs = [(args, f"{name}: ", size) for args, name, size in _KNOWN_MODELS]
    configs += [(args, "", ref.ffn_hidden_dim(*args)) for args in _TINY]
    for i, ((dim, multiple_of, multiplier), name, expected) in enumerate(configs):
        if multiplier is None and i % 2 == 0:  # also test that the multiplier is optional
            out = call(fn, dim, multiple_of)
        else:
            out = call(fn, dim, multiple_of, multiplier)
        label = f"{name}dim={dim}, multiple_of={multiple_of}, ffn_dim_multiplier={multiplier}"
        _check_hidden(out, expected, dim, multiple_of, multiplier, label)
    return "gives the hidden sizes of 8 real Llama models (11008, 14336, ...) and 8 tiny configs"


def _check_hidden(
    out: object, expected: int, dim: int, multiple_of: int, multiplier: float | None, label: str
) -> None:
    """Fail, naming the likely mistake, unless `out` is the int `expected`."""
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        fail(f"with {label} you returned a tensor; return a Python int (use .item() or int()).")
    if isinstance(out, float):
        if out == expected:
            fail(
                f"with {label} you returned the float {out!r}; the layer size must be an int. "
                "Use integer division (//) or int(...)."
            )
        what = "a float"
    elif isinstance(out, numbers.Integral) and not isinstance(out, bool):
        what = "an int"
        if out == expected:
            return
    else:
        fail(f"with {label} the result should be an int, but it is {type(out).__name__}.")
    mult = 1.0 if multiplier is None else multiplier
    hidden = int(2 * 4 * dim / 3)
    scaled = int(mult * hidden)

    def up(n: float) -> int:
        """Round n up to a multiple of multiple_of."""
        return multiple_of * math.ceil(n / multiple_of)

    mistakes = [
        (
            up(int(mult * 4 * dim)),
            "the 2/3 is missing: the hidden size starts at 2/3 of 4 * dim (SwiGLU has three "
            "matrices instead of two, so Llama shrinks each to keep the parameter count).",
        ),
        (
            multiple_of * (scaled // multiple_of),
            "you rounded down; round up to the next multiple of multiple_of: "
            "multiple_of * ((hidden + multiple_of - 1) // multiple_of).",
        ),
        (
            multiple_of * round(scaled / multiple_of),
            "you rounded to the nearest multiple; round up: "
            "multiple_of * ((hidden + multiple_of - 1) // multiple_of).",
        ),
    ]
    if multiplier is not None:
        mistakes += [
            (
                up(hidden),
                "the ffn_dim_multiplier is ignored: multiply the hidden size by it (then round "
                "up) when it is not None.",
            ),
            (
                int(mult * up(hidden)),
                "the multiplier is applied after rounding. Multiply first, "
                "int(ffn_dim_multiplier * hidden), then round up to a multiple of multiple_of.",
            ),
            (
                mult * up(hidden),
                "the multiplier is applied after rounding. Multiply first, "
                "int(ffn_dim_multiplier * hidden), then round up to a multiple of multiple_of.",
            ),
        ]
    fits = [message for wrong, message in mistakes if wrong != expected and out == wrong]
    if fits:
        named = " Or: ".join(dict.fromkeys(fits))  # several mistakes can give the same number
        fail(f"with {label} you returned {out!r}, expected {expected}: {named}")
    fail(
        f"with {label} you returned {what}, {out!r}; expected {expected}. The rule: hidden = "
        "int(2 * 4 * dim / 3); if ffn_dim_multiplier is not None, hidden = "
        "int(ffn_dim_multiplier * hidden); then round hidden up to a multiple of multiple_of."
    )
