"""Checks for LoRA: the forward pass of a linear layer with a low-rank update."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._core import Mistake, call, check, fail, match_mistakes


def reference_lora_forward(x: torch.Tensor, weight: torch.Tensor, A: torch.Tensor,
                           B: torch.Tensor, alpha: float, r: int) -> torch.Tensor:  # fmt: skip
    """x @ weight.T + (alpha / r) * (x @ A.T) @ B.T; weight (out, in), A (r, in), B (out, r)."""
    return x @ weight.T + (alpha / r) * (x @ A.T) @ B.T


def _mistakes(x: torch.Tensor, weight: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
              alpha: float, r: int) -> list[Mistake]:  # fmt: skip
    """The typical wrong answers on this input; those that the shapes do not allow are skipped."""
    s = alpha / r
    base = x @ weight.T
    merged = weight + s * B @ A
    candidates: list[tuple[Callable[[], torch.Tensor], str]] = [
        (lambda: base + (x @ A.T) @ B.T, "the scaling is missing: the update B(A(x)) must be "
         "multiplied by alpha / r."),
        (lambda: base + alpha * (x @ A.T) @ B.T, "the update is scaled by alpha; the scale is "
         "alpha / r (so that changing r does not change the size of the update)."),
        (lambda: base + (r / alpha) * (x @ A.T) @ B.T, "the update is scaled by r / alpha; the "
         "scale is alpha / r."),
        (lambda: base + (alpha // r) * (x @ A.T) @ B.T, "alpha // r is integer division and "
         "drops the fraction; use alpha / r."),
        (lambda: base - s * (x @ A.T) @ B.T, "the update is subtracted; LoRA adds it: "
         "x @ weight.T + (alpha / r) * ..."),
        (lambda: s * (x @ A.T) @ B.T, "the base layer is missing: LoRA adds the update to the "
         "frozen layer's output x @ weight.T."),
        (lambda: x @ weight.T @ A.T @ B.T * s, "the update is applied to the base layer's output; "
         "A reads the layer's input x, in parallel with the base layer."),
        (lambda: base + s * (x @ B.T) @ A.T, "A and B are swapped: x goes through A first "
         "(A has shape (r, in), so x @ A.T has shape (..., r)), then through B (shape (out, r)). "
         "A merged weight is weight + scale * B @ A, not A @ B."),
        (lambda: base + s * (x @ A) @ B, "neither A nor B is transposed: like weight, they are "
         "stored as (out_features, in_features), so use x @ A.T and then @ B.T."),
        (lambda: base + s * (x @ A) @ B.T, "A is not transposed: A has shape (r, in), so the "
         "first step is x @ A.T."),
        (lambda: base + s * (x @ A.T) @ B, "B is not transposed: B has shape (out, r), so the "
         "second step is (x @ A.T) @ B.T."),
        (lambda: x @ weight + s * (x @ A.T) @ B.T, "weight is not transposed: it has shape "
         "(out, in) like nn.Linear's, so the base output is x @ weight.T."),
        (lambda: x @ merged, "the merged weight is not transposed: it has shape (out, in), so "
         "use x @ (weight + scale * B @ A).T."),
    ]  # fmt: skip
    out = []
    for compute, message in candidates:
        try:
            out.append((compute(), message))
        except RuntimeError:  # shapes that do not fit: this mistake would crash instead
            continue
    return out


def _case(gen: torch.Generator, batch: tuple[int, ...], n_in: int, n_out: int, r: int,
          dtype: torch.dtype) -> tuple[torch.Tensor, ...]:  # fmt: skip
    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)

    # B is not zero here (it is at initialisation): a zero B would hide every mistake in the branch
    return rand(*batch, n_in), rand(n_out, n_in) / n_in**0.5, rand(r, n_in), rand(n_out, r) * 0.5


@check
def lora_forward(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(x, weight, A, B, alpha, r)` = x @ weight.T + (alpha / r) * (x @ A.T) @ B.T."""
    gen = torch.Generator().manual_seed(0)
    cases = [
        # (batch shape, in, out, r, alpha, dtype): alpha / r differs from 1, alpha, r / alpha
        # and alpha // r, so each wrong scale gives a different result
        ((3,), 4, 4, 4, 10, torch.float32),  # square: a wrong transpose runs and is named
        ((2, 5), 6, 5, 3, 7.5, torch.float32),  # in, out and r all differ: shapes must be right
        ((4,), 7, 3, 2, 16.0, torch.float64),
    ]
    for batch, n_in, n_out, r, alpha, dtype in cases:
        x, weight, A, B = _case(gen, batch, n_in, n_out, r, dtype)
        kind = str(dtype).removeprefix("torch.")
        label = (f"x {tuple(x.shape)}, weight {tuple(weight.shape)}, A {tuple(A.shape)}, "
                 f"B {tuple(B.shape)}, alpha={alpha}, r={r} ({kind})")  # fmt: skip
        given = [t.clone() for t in (x, weight, A, B)]
        try:
            out = call(fn, *given, alpha, r)
        except Exception as exc:  # call() reports the crash; add what the shapes mean
            cause = exc.__cause__
            if isinstance(cause, RuntimeError) and ("shape" in str(cause) or "size" in str(cause)):
                fail(f"with {label} your function raised RuntimeError: {cause}\nThe shapes do "
                     f"not fit: x @ A.T has shape (..., r) = (..., {r}) and (x @ A.T) @ B.T "
                     f"has shape (..., out) = (..., {n_out}). Check which of A, B and weight "
                     "you transpose, and that A comes first.")  # fmt: skip
            raise
        for name, before, after in zip(("x", "weight", "A", "B"), (x, weight, A, B), given,
                                       strict=True):  # fmt: skip
            if not torch.equal(before, after):
                fail(f"your function changed {name} in place (e.g. weight += ...). Compute a "
                     "new tensor and leave the inputs as they are.")  # fmt: skip
        if isinstance(out, torch.Tensor) and out.dtype != dtype:
            fail(f"with {label} the result is {out.dtype}, but the inputs are {dtype}; keep the "
                 "inputs' dtype (no .float() or .double()).")  # fmt: skip
        expected = reference_lora_forward(x, weight, A, B, alpha, r)
        hint = "Compare with x @ weight.T + (alpha / r) * (x @ A.T) @ B.T."
        match_mistakes(out, expected, _mistakes(x, weight, A, B, alpha, r), label, hint)
    return (
        "equals x @ weight.T + (alpha / r) * (x @ A.T) @ B.T on 3 inputs (square and non-square "
        "matrices, a batch axis, float32 and float64), inputs left unchanged"
    )
