"""The PyTorch-primer checks: each passes correct solutions and names the typical mistakes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from check_harness import table_tests
from torch import nn

from llama_edu import checks

# --------------------------------------------------------------------------- pairwise_sq_distances


def dist_reference(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(dim=-1)


def dist_by_expansion(a, b):
    """Written differently: |a|^2 + |b|^2 - 2 a.b, as fast libraries do."""
    return (a * a).sum(-1, keepdim=True) + (b * b).sum(-1) - 2 * a @ b.T


def dist_by_cdist(a, b):
    return torch.cdist(a, b) ** 2


def dist_by_loops(a, b):
    out = torch.empty(a.shape[0], b.shape[0], dtype=a.dtype)
    for i in range(a.shape[0]):
        for j in range(b.shape[0]):
            out[i, j] = ((a[i] - b[j]) ** 2).sum()
    return out


def dist_not_squared(a, b):
    return dist_reference(a, b).sqrt()


def dist_wrong_axis(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(dim=0)


def dist_no_new_axes(a, b):
    return ((a - b) ** 2).sum(dim=-1)


def dist_keeps_features(a, b):
    return (a[:, None, :] - b[None, :, :]) ** 2


def dist_swapped(a, b):
    return ((b[:, None, :] - a[None, :, :]) ** 2).sum(dim=-1)


def dist_abs(a, b):
    return (a[:, None, :] - b[None, :, :]).abs().sum(dim=-1)


def dist_mean(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).mean(dim=-1)


def dist_dot(a, b):
    return a @ b.T


def dist_float32(a, b):
    return dist_reference(a.float(), b.float())


# --------------------------------------------------------------------------- grad_descent_step


def step_reference(params, loss_fn, lr):
    loss = loss_fn()
    loss.backward()
    with torch.no_grad():
        for p in params:
            p -= lr * p.grad
            p.grad = None
    return loss.item()


def step_zero_first(params, loss_fn, lr):
    """Written differently: zero the gradients before backward, return a tensor."""
    for p in params:
        if p.grad is not None:
            p.grad.zero_()
    loss = loss_fn()
    loss.backward()
    for p in params:
        p.data.add_(p.grad, alpha=-lr)
    return loss.detach()


def step_with_sgd(params, loss_fn, lr):
    optimizer = torch.optim.SGD(params, lr=lr)
    optimizer.zero_grad()
    loss = loss_fn()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def step_no_zero_grad(params, loss_fn, lr):
    loss = loss_fn()
    loss.backward()
    with torch.no_grad():
        for p in params:
            p -= lr * p.grad
    return loss.item()


def step_uphill(params, loss_fn, lr):
    loss = loss_fn()
    loss.backward()
    with torch.no_grad():
        for p in params:
            p += lr * p.grad
            p.grad = None
    return loss.item()


def step_no_lr(params, loss_fn, lr):
    loss = loss_fn()
    loss.backward()
    with torch.no_grad():
        for p in params:
            p -= p.grad
            p.grad = None
    return loss.item()


def step_no_no_grad(params, loss_fn, lr):
    loss = loss_fn()
    loss.backward()
    for p in params:
        p -= lr * p.grad
    return loss.item()


def step_rebinds(params, loss_fn, lr):
    loss = loss_fn()
    loss.backward()
    for p in params:
        p = p - lr * p.grad  # noqa: PLW2901 - the mistake under test
    return loss.item()


def step_first_only(params, loss_fn, lr):
    loss = loss_fn()
    loss.backward()
    with torch.no_grad():
        params[0] -= lr * params[0].grad
    for p in params:
        p.grad = None
    return loss.item()


def step_loss_after(params, loss_fn, lr):
    step_reference(params, loss_fn, lr)
    return loss_fn().item()


def step_returns_nothing(params, loss_fn, lr):
    step_reference(params, loss_fn, lr)


# --------------------------------------------------------------------------- two_layer_mlp


class MLPReference(nn.Module):
    def __init__(self, dim_in, hidden, dim_out):
        super().__init__()
        self.fc1 = nn.Linear(dim_in, hidden)
        self.fc2 = nn.Linear(hidden, dim_out)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class MLPSequential(nn.Module):
    """Written differently: nn.Sequential."""

    def __init__(self, dim_in, hidden, dim_out):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim_in, hidden), nn.ReLU(), nn.Linear(hidden, dim_out))

    def forward(self, x):
        return self.net(x)


class MLPOwnParameters(nn.Module):
    """Written differently: its own (in, out) matrices and x @ W + b."""

    def __init__(self, dim_in, hidden, dim_out):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(dim_in, hidden))
        self.b1 = nn.Parameter(torch.zeros(hidden))
        self.w2 = nn.Parameter(torch.randn(hidden, dim_out))
        self.b2 = nn.Parameter(torch.randn(dim_out))

    def forward(self, x):
        return (x @ self.w1 + self.b1).clamp(min=0) @ self.w2 + self.b2


class MLPNoBias(MLPReference):
    def __init__(self, dim_in, hidden, dim_out):
        nn.Module.__init__(self)
        self.fc1 = nn.Linear(dim_in, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, dim_out, bias=False)


class MLPNoActivation(MLPReference):
    def forward(self, x):
        return self.fc2(self.fc1(x))


class MLPReluAtTheEnd(MLPReference):
    def forward(self, x):
        return torch.relu(self.fc2(torch.relu(self.fc1(x))))


class MLPSilu(MLPReference):
    def forward(self, x):
        return self.fc2(nn.functional.silu(self.fc1(x)))


class MLPPlainList(nn.Module):
    def __init__(self, dim_in, hidden, dim_out):
        super().__init__()
        self.layers = [nn.Linear(dim_in, hidden), nn.Linear(hidden, dim_out)]

    def forward(self, x):
        return self.layers[1](torch.relu(self.layers[0](x)))


class MLPNoSuper(MLPReference):
    def __init__(self, dim_in, hidden, dim_out):
        self.fc1 = nn.Linear(dim_in, hidden)
        self.fc2 = nn.Linear(hidden, dim_out)


class MLPWrongHidden(MLPReference):
    def __init__(self, dim_in, hidden, dim_out):
        nn.Module.__init__(self)
        self.fc1 = nn.Linear(dim_in, dim_in)
        self.fc2 = nn.Linear(dim_in, dim_out)


# --------------------------------------------------------------------------- the tables

CHECKS = ["pairwise_sq_distances", "grad_descent_step", "two_layer_mlp"]

CORRECT: list[tuple[str, Callable]] = [
    ("pairwise_sq_distances", dist_reference),
    ("pairwise_sq_distances", dist_by_expansion),
    ("pairwise_sq_distances", dist_by_cdist),
    ("pairwise_sq_distances", dist_by_loops),
    ("grad_descent_step", step_reference),
    ("grad_descent_step", step_zero_first),
    ("grad_descent_step", step_with_sgd),
    ("two_layer_mlp", MLPReference),
    ("two_layer_mlp", MLPSequential),
    ("two_layer_mlp", MLPOwnParameters),
]

WRONG: list[tuple[str, Callable, tuple[str, ...]]] = [
    ("pairwise_sq_distances", dist_not_squared, ("square root",)),
    ("pairwise_sq_distances", dist_wrong_axis, ("wrong axis", "dim=-1")),
    ("pairwise_sq_distances", dist_no_new_axes, ("RuntimeError", "new axis", "(n, m, d)")),
    ("pairwise_sq_distances", dist_keeps_features, ("kept the feature axis",)),
    ("pairwise_sq_distances", dist_swapped, ("swapped",)),
    ("pairwise_sq_distances", dist_abs, ("absolute differences",)),
    ("pairwise_sq_distances", dist_mean, ("mean",)),
    ("pairwise_sq_distances", dist_dot, ("dot products",)),
    ("pairwise_sq_distances", dist_float32, ("float64",)),
    ("grad_descent_step", step_no_zero_grad, ("zero_grad", "add up")),
    ("grad_descent_step", step_uphill, ("along the gradient",)),
    ("grad_descent_step", step_no_lr, ("learning rate",)),
    ("grad_descent_step", step_no_no_grad, ("torch.no_grad()", "leaf")),
    ("grad_descent_step", step_rebinds, ("did not change", "rebinds")),
    ("grad_descent_step", step_first_only, ("two parameters", "only the first")),
    ("grad_descent_step", step_loss_after, ("loss after the update",)),
    ("grad_descent_step", step_returns_nothing, ("returned NoneType",)),
    ("two_layer_mlp", MLPNoBias, ("no bias",)),
    ("two_layer_mlp", MLPNoActivation, ("no activation",)),
    ("two_layer_mlp", MLPReluAtTheEnd, ("after the last layer",)),
    ("two_layer_mlp", MLPSilu, ("SiLU",)),
    ("two_layer_mlp", MLPPlainList, ("finds nothing", "plain Python")),
    ("two_layer_mlp", MLPNoSuper, ("super().__init__()",)),
    ("two_layer_mlp", MLPWrongHidden, ("parameters; expected",)),
]


# the five tests every table of checks gets (tests/check_harness.py)
globals().update(table_tests(CORRECT, WRONG, CHECKS))


def test_in_place_changes_to_the_inputs_are_named():
    def scale_in_place(a, b):
        a.mul_(1.0)
        b.add_(1.0)
        return dist_reference(a, b - 1.0)

    with pytest.raises(checks.CheckFailed, match="in place"):
        checks.pairwise_sq_distances(scale_in_place)


def test_a_class_that_is_not_a_module_is_named():
    class NotAModule:
        def __init__(self, dim_in, hidden, dim_out):
            pass

    with pytest.raises(checks.CheckFailed, match="subclass nn.Module"):
        checks.two_layer_mlp(NotAModule)


def test_the_worked_numbers_of_the_chapter():
    """0 -> 0.6 -> 1.08 -> 1.464 for (w - 3)^2 with lr 0.1, as the notebook works it out."""
    w = torch.tensor(0.0, requires_grad=True)
    losses = [step_reference([w], lambda: (w - 3.0) ** 2, 0.1) for _ in range(3)]
    assert losses == pytest.approx([9.0, 5.76, 3.6864])
    assert w.item() == pytest.approx(1.464)
    a, b = torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[3.0, 4.0]])
    assert dist_reference(a, b).tolist() == [[25.0], [13.0]]
