"""Checks for the PyTorch primer: broadcasting, a gradient-descent step, and a small nn.Module."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._core import Mistake, call, check, close, expect_tensor, fail, match_mistakes

# --------------------------------------------------------------------------- pairwise distances

_AXES_HINT = (
    "Give a a new axis of length 1 in the middle and b a new one in front (None or "
    "unsqueeze), so that the difference broadcasts to shape (n, m, d); then reduce the last "
    "axis."
)


@check
def pairwise_sq_distances(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(a, b) -> (n, m)`: squared distance of every row of a to every row of b."""
    gen = torch.Generator().manual_seed(0)
    # (label, n, m, d, dtype). The first case has n, m and d all different, so that summing
    # the wrong axis or swapping rows and columns shows in the shape.
    cases = [
        ("a of shape (3, 2) and b of shape (4, 2)", 3, 4, 2, torch.float32),
        ("a of shape (5, 3) and b of shape (2, 3)", 5, 2, 3, torch.float32),
        ("a and b both of shape (4, 4)", 4, 4, 4, torch.float32),
        ("a single row, a of shape (1, 6), and b of shape (3, 6)", 1, 3, 6, torch.float32),
        ("float64 inputs of shapes (4, 8) and (2, 8)", 4, 2, 8, torch.float64),
    ]
    for label, n, m, d, dtype in cases:
        a = torch.randint(-3, 4, (n, d), generator=gen).to(dtype)
        b = torch.randn(m, d, generator=gen, dtype=dtype)
        _check_distances(fn, a, b, label)
    a = torch.randn(5, 3, generator=gen)
    _check_distances(fn, a, a.clone(), "b equal to a (the diagonal must be 0)")
    return (
        "equals the reference on 6 inputs (n, m and d all different, square, one row, float64, "
        "b = a); shape (n, m), keeps the dtype, leaves the inputs unchanged"
    )


def _check_distances(
    fn: Callable[..., torch.Tensor], a: torch.Tensor, b: torch.Tensor, label: str
) -> None:
    """Fail, naming the likely mistake, unless fn(a, b) equals the squared distances."""
    a_in, b_in = a.clone(), b.clone()
    try:
        out = call(fn, a_in, b_in)
    except NotImplementedError:
        raise
    except Exception as failure:  # call() already described the crash
        cause = str(failure.__cause__ or failure)
        hint = _AXES_HINT if "must match the size" in cause else ""
        fail(f"with {label}: {failure}\n{hint}".rstrip())
    if not torch.equal(a_in, a) or not torch.equal(b_in, b):
        fail("your function changed a or b in place. Compute a new tensor instead.")
    n, m, d = a.shape[0], b.shape[0], a.shape[1]
    diff = a[:, None, :] - b[None, :, :]  # (n, m, d)
    expected = (diff**2).sum(dim=-1)
    if isinstance(out, torch.Tensor) and tuple(out.shape) != (n, m):
        shape = tuple(out.shape)
        if shape in ((m, d), (n, d)) and len({n, m, d}) == 3:
            fail(
                f"with {label} the result has shape {shape}: you reduced the wrong axis. The "
                f"difference has shape (n, m, d) = {(n, m, d)}; sum over the last axis, the "
                "features (dim=-1)."
            )
        if shape == (m, n):
            fail(
                f"with {label} the result has shape {shape}: rows and columns are swapped. "
                "out[i, j] compares row i of a with row j of b, so a's axis comes first."
            )
        if shape == (n, m, d):
            fail(
                f"with {label} the result has shape {shape}: you kept the feature axis. Sum "
                "the squared differences over the last axis (dim=-1)."
            )
        if shape in ((n,), (n, d)) and n == m:
            fail(
                f"with {label} the result has shape {shape}: you compared row i of a only "
                f"with row i of b. {_AXES_HINT}"
            )
    mistakes: list[Mistake] = [
        (expected.sqrt(), "you returned the distances; the exercise asks for their squares. "
         "Do not take the square root."),
        (diff.abs().sum(dim=-1), "you summed the absolute differences. Square each "
         "difference before summing."),
        (diff.sum(dim=-1) ** 2, "you squared the sum of the differences. Square each "
         "difference first, then sum."),
        ((diff**2).mean(dim=-1), "you took the mean over the features; the squared "
         "distance is their sum."),
        (a @ b.T, "you computed dot products (a @ b.T), not distances. Subtract the rows, "
         "square and sum."),
        (expected.T if n == m else expected.new_zeros(0), "rows and columns are swapped: "
         "out[i, j] compares row i of a with row j of b."),
    ]
    match_mistakes(out, expected, mistakes, label, otherwise=_AXES_HINT)
    if out.dtype != a.dtype:
        fail(f"with {label} the result has dtype {out.dtype}; keep the inputs' dtype ({a.dtype}).")


# --------------------------------------------------------------------------- gradient descent


def _quadratic() -> tuple[list[torch.Tensor], Callable[[], torch.Tensor], float]:
    """One parameter w = 0 and loss (w - 3)^2, as in the chapter's worked example."""
    w = torch.tensor(0.0, requires_grad=True)
    return [w], lambda: (w - 3.0) ** 2, 0.1


def _line_fit() -> tuple[list[torch.Tensor], Callable[[], torch.Tensor], float]:
    """Two parameters (a weight vector and a bias) and the mean squared error of a line fit."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, generator=gen)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.7
    w = torch.zeros(3, requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    return [w, b], lambda: ((x @ w + b - y) ** 2).mean(), 0.05


def _ideal_run(
    problem: Callable[[], tuple[list[torch.Tensor], Callable[[], torch.Tensor], float]],
    steps: int,
    mistake: str = "",
) -> tuple[list[float], list[torch.Tensor]]:
    """(returned losses, final parameters) of `steps` steps, done right or with one mistake."""
    params, loss_fn, lr = problem()
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        loss.backward()
        with torch.no_grad():
            for index, p in enumerate(params):
                if mistake == "first only" and index > 0:
                    continue
                step = p.grad if mistake == "no lr" else lr * p.grad
                p.add_(step if mistake == "uphill" else -step)
                if mistake != "no zero":
                    p.grad = None
        losses.append(loss_fn().item() if mistake == "loss after" else loss.item())
    return losses, [p.detach().clone() for p in params]


_STEP_MISTAKES = {
    "no zero": "after the first step the parameters moved too far: gradients add up in .grad "
    "at every backward(). Reset them after each update (p.grad = None or p.grad.zero_()), or "
    "before each backward(): you forgot zero_grad.",
    "uphill": "the loss went up: you moved along the gradient. Gradient descent subtracts "
    "lr times the gradient.",
    "no lr": "the step is too large: you subtracted the whole gradient. Multiply it by the "
    "learning rate lr first.",
    "first only": "only the first parameter changed. Update every tensor in params.",
}


@check
def grad_descent_step(fn: Callable[..., Any]) -> str:
    """Check `fn(params, loss_fn, lr) -> loss`: one step of gradient descent, in place."""
    for label, problem, steps in [
        ("one parameter w = 0, loss (w - 3)^2, lr = 0.1", _quadratic, 3),
        ("two parameters (w of shape (3,) and a bias b), mean squared error, lr = 0.05",
         _line_fit, 3),
    ]:
        want_losses, want_params = _ideal_run(problem, steps)
        params, loss_fn, lr = problem()
        originals = list(params)
        got_losses = []
        for step in range(steps):
            try:
                out = call(fn, params, loss_fn, lr)
            except NotImplementedError:
                raise
            except Exception as failure:
                cause = str(failure.__cause__ or failure)
                hint = ""
                if "leaf Variable that requires grad" in cause:
                    hint = (
                        "PyTorch refuses an in-place change of a parameter while it records "
                        "operations for autograd. Do the update inside `with torch.no_grad():`."
                    )
                elif "NoneType" in cause:
                    hint = (
                        "p.grad is None until the first backward() and after p.grad = None. "
                        "Call loss.backward() before you read p.grad."
                    )
                elif "does not require grad" in cause or "does not have a grad_fn" in cause:
                    hint = "Call backward() on the loss that loss_fn() returns, not on a copy."
                fail(f"with {label}, step {step + 1}: {failure}\n{hint}".rstrip())
            got_losses.append(_loss_value(out, label))
            if any(p is not q for p, q in zip(params, originals, strict=True)):
                fail(
                    f"with {label}: the list params now holds other tensors. Change each "
                    "parameter in place (p -= ... inside torch.no_grad()), so that the model "
                    "that owns it sees the new value."
                )
            if not all(p.requires_grad and p.is_leaf for p in originals):
                fail(
                    f"with {label}: after your step a parameter no longer requires grad (or is "
                    "no longer a leaf). Update it in place inside torch.no_grad(); do not "
                    "detach it or build a new tensor."
                )
        got_params = [p.detach().clone() for p in originals]
        if all(close(g, w) for g, w in zip(got_params, want_params, strict=True)):
            if all(abs(g - w) <= 1e-4 * max(1.0, abs(w)) for g, w in
                   zip(got_losses, want_losses, strict=True)):
                continue
            after, _ = _ideal_run(problem, steps, "loss after")
            if all(abs(g - w) <= 1e-4 * max(1.0, abs(w)) for g, w in
                   zip(got_losses, after, strict=True)):
                fail(
                    f"with {label}: you returned the loss after the update. Return the value "
                    "of the loss that you differentiated, computed before the step."
                )
            fail(
                f"with {label} the parameters are right but the returned losses are "
                f"{[round(v, 4) for v in got_losses]}; expected "
                f"{[round(v, 4) for v in want_losses]}, the loss before each step."
            )
        if all(close(g, p.detach()) for g, p in zip(got_params, problem()[0], strict=True)):
            fail(
                f"with {label}: the parameters did not change. Update each tensor of params in "
                "place (p -= lr * p.grad inside torch.no_grad()); p = p - ... only rebinds a "
                "local name."
            )
        for mistake, message in _STEP_MISTAKES.items():
            _, wrong = _ideal_run(problem, steps, mistake)
            if all(close(g, w) for g, w in zip(got_params, wrong, strict=True)):
                fail(f"with {label}, after {steps} steps: {message}")
        values = [round(v, 4) for v in got_params[0].reshape(-1).tolist()]
        wanted = [round(v, 4) for v in want_params[0].reshape(-1).tolist()]
        fail(
            f"with {label}, after {steps} steps the first parameter is {values}; expected "
            f"{wanted}. One step: loss = loss_fn(), loss.backward(), then p -= lr * p.grad for "
            "every p, and reset the gradients."
        )
    return (
        "3 steps on a one-parameter and a two-parameter problem match plain gradient descent; "
        "parameters changed in place, gradients reset, the loss before each step returned"
    )


def _loss_value(out: Any, label: str) -> float:
    """The loss a step returned, as a float (a number or a one-element tensor)."""
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        return float(out.detach().item())
    if isinstance(out, numbers.Real) and not isinstance(out, bool):
        return float(out)
    fail(
        f"with {label} your function returned {type(out).__name__}; return the loss before "
        "the step as a number (loss.item())."
    )
    raise AssertionError  # unreachable: fail() raises


# --------------------------------------------------------------------------- a two-layer MLP


@check
def two_layer_mlp(cls: Callable[..., Any]) -> str:
    """Check `cls(dim_in, hidden, dim_out)`: Linear (with bias), ReLU, Linear (with bias)."""
    gen = torch.Generator().manual_seed(0)
    for dim_in, hidden, dim_out in [(3, 5, 2), (4, 16, 7)]:
        label = f"TwoLayerMLP({dim_in}, {hidden}, {dim_out})"
        torch.manual_seed(0)
        try:
            model = call(cls, dim_in, hidden, dim_out)
        except NotImplementedError:
            raise
        except Exception as failure:
            cause = str(failure.__cause__ or failure)
            hint = (
                "Call super().__init__() first in __init__, before you assign any layer."
                if "__init__() call" in cause else ""
            )
            fail(f"creating {label}: {failure}\n{hint}".rstrip())
        if not isinstance(model, nn.Module):
            fail(f"{label} is a {type(model).__name__}; the class must subclass nn.Module.")
        params = list(model.parameters())
        if not params:
            fail(
                f"{label}.parameters() finds nothing. Keep the layers as attributes of self "
                "(self.name = nn.Linear(...)); layers in a local variable or a plain Python "
                "list are not registered."
            )
        expected = dim_in * hidden + hidden + hidden * dim_out + dim_out
        count = sum(p.numel() for p in params)
        if count != expected:
            no_bias = dim_in * hidden + hidden * dim_out
            if count == no_bias:
                fail(
                    f"{label} has {count} parameters, expected {expected}: no bias. Both layers "
                    "keep nn.Linear's bias (bias=True, the default)."
                )
            if count in (no_bias + hidden, no_bias + dim_out):
                fail(
                    f"{label} has {count} parameters, expected {expected}: one layer has no "
                    "bias. Both layers keep nn.Linear's bias."
                )
            fail(
                f"{label} has {count} parameters; expected {expected} = {dim_in}*{hidden} + "
                f"{hidden} + {hidden}*{dim_out} + {dim_out}: a Linear({dim_in}, {hidden}) and a "
                f"Linear({hidden}, {dim_out}), each with a bias."
            )
        w1, b1, w2, b2 = _mlp_weights(params, dim_in, hidden, dim_out, label)
        for shape in [(6, dim_in), (2, 3, dim_in)]:
            x = torch.randn(*shape, generator=gen)
            where = f"{label} on x of shape {shape}"
            try:
                out = call(model, x)
            except NotImplementedError:
                raise
            except Exception as failure:
                fail(f"{where}: {failure}")
            h = x @ w1 + b1
            want = torch.relu(h) @ w2 + b2
            expect_tensor(out, (*shape[:-1], dim_out), f"the output of {where}")
            mistakes: list[Mistake] = [
                (h @ w2 + b2, "there is no activation between the layers. Two linear layers "
                 "in a row are one linear layer; apply ReLU to the hidden vector."),
                (torch.relu(want), "you applied ReLU after the last layer too. Apply it only "
                 "between the layers, so that the output can be negative."),
                (torch.relu(torch.relu(h) @ w2) + b2, "you applied ReLU after the last layer "
                 "too. Apply it only between the layers."),
                (nn.functional.silu(h) @ w2 + b2, "you used SiLU; this exercise asks for "
                 "ReLU, max(0, x)."),
                (torch.sigmoid(h) @ w2 + b2, "you used a sigmoid; this exercise asks for "
                 "ReLU, max(0, x)."),
                (torch.tanh(h) @ w2 + b2, "you used tanh; this exercise asks for ReLU, max(0, x)."),
            ]
            match_mistakes(out.detach(), want.detach(), mistakes, where,
                           otherwise="Expected second(relu(first(x))).")
    return (
        "two configurations, inputs (n, dim_in) and (batch, seq, dim_in): Linear with bias, "
        "ReLU, Linear with bias; parameter count right"
    )


def _mlp_weights(
    params: list[torch.Tensor], dim_in: int, hidden: int, dim_out: int, label: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W1, b1, W2, b2) found by shape, each matrix as (in, out) so that y = x @ W + b."""
    found: dict[str, torch.Tensor] = {}
    for p in params:
        p = p.detach()
        shape = tuple(p.shape)
        if shape == (hidden, dim_in):  # nn.Linear stores (out, in)
            found["w1"] = p.T
        elif shape == (dim_in, hidden):
            found["w1"] = p
        elif shape == (dim_out, hidden):
            found["w2"] = p.T
        elif shape == (hidden, dim_out):
            found["w2"] = p
        elif shape == (hidden,):
            found["b1"] = p
        elif shape == (dim_out,):
            found["b2"] = p
    missing = [k for k in ("w1", "b1", "w2", "b2") if k not in found]
    if missing:
        shapes = [tuple(p.shape) for p in params]
        fail(
            f"{label} has parameters of shapes {shapes}; expected a Linear({dim_in}, {hidden}) "
            f"(weight ({hidden}, {dim_in}), bias ({hidden},)) and a Linear({hidden}, {dim_out}) "
            f"(weight ({dim_out}, {hidden}), bias ({dim_out},)). Which layer has the wrong size?"
        )
    return found["w1"], found["b1"], found["w2"], found["b2"]
