"""The training checks: each passes correct solutions and names the typical mistakes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llama_edu import checks
from llama_edu.train import adamw_step as adamw_reference
from llama_edu.train import lr_at
from llama_edu.train import train_step as train_step_library

# --------------------------------------------------------------------------- cross_entropy


def ce_reference(logits, targets):
    return F.cross_entropy(logits, targets)


def ce_logsumexp(logits, targets):
    """Written out: subtract the row maximum, then log-sum-exp minus the target logit."""
    top = logits.amax(dim=-1, keepdim=True)
    lse = top.squeeze(-1) + torch.log(torch.exp(logits - top).sum(dim=-1))
    picked = logits.gather(-1, targets[:, None]).squeeze(-1)
    return (lse - picked).mean()


def ce_log_softmax_one_hot(logits, targets):
    """Another correct form: a one-hot mask times log_softmax, averaged over rows."""
    one_hot = F.one_hot(targets, logits.shape[-1]).to(logits.dtype)
    return -(one_hot * torch.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def ce_unstable(logits, targets):
    probs = torch.exp(logits) / torch.exp(logits).sum(dim=-1, keepdim=True)
    return -torch.log(probs[torch.arange(len(targets)), targets]).mean()


def ce_log_of_softmax(logits, targets):
    """Stable softmax, but the log of a probability that underflows to 0 is -inf."""
    probs = torch.softmax(logits, dim=-1)
    return -torch.log(probs[torch.arange(len(targets)), targets]).mean()


def ce_sum(logits, targets):
    return F.cross_entropy(logits, targets, reduction="sum")


def ce_log2(logits, targets):
    return -torch.log_softmax(logits, -1)[torch.arange(len(targets)), targets].mean() / math.log(2)


def ce_wrong_axis(logits, targets):
    return -torch.log_softmax(logits, dim=0)[torch.arange(len(targets)), targets].mean()


def ce_no_minus(logits, targets):
    return torch.log_softmax(logits, -1)[torch.arange(len(targets)), targets].mean()


def ce_not_normalised(logits, targets):
    return -logits[torch.arange(len(targets)), targets].mean()


def ce_per_example(logits, targets):
    return F.cross_entropy(logits, targets, reduction="none")


def ce_item(logits, targets):
    return F.cross_entropy(logits, targets).item()


def ce_detached(logits, targets):
    return F.cross_entropy(logits.detach(), targets)


def ce_in_place(logits, targets):
    logits -= logits.amax(dim=-1, keepdim=True)
    return F.cross_entropy(logits, targets)


def ce_not_yet(logits, targets):
    raise NotImplementedError("Exercise: replace this line with your solution")


@pytest.mark.parametrize("solution", [ce_reference, ce_logsumexp, ce_log_softmax_one_hot])
def test_cross_entropy_accepts_correct_solutions(solution, capsys):
    checks.cross_entropy(solution)
    out = capsys.readouterr().out
    assert out.startswith("\u2713 checks.cross_entropy passed")
    assert checks.results()["cross_entropy"].status == "passed"


@pytest.mark.parametrize(
    ("wrong", "names_the_mistake"),
    [
        (ce_unstable, "not numerically stable"),
        (ce_log_of_softmax, "not numerically stable"),
        (ce_sum, "sum over the examples"),
        (ce_log2, "in bits (log base 2)"),
        (ce_wrong_axis, "over the batch axis (dim=0)"),
        (ce_no_minus, "the sign is wrong"),
        (ce_not_normalised, "without normalising"),
        (ce_per_example, "one loss per example"),
        (ce_item, "Python float"),
        (ce_detached, "not connected to the logits"),
        (ce_in_place, "changed `logits` or `targets` in place"),
    ],
)
def test_cross_entropy_names_the_mistake(wrong, names_the_mistake):
    with pytest.raises(checks.CheckFailed, match="checks.cross_entropy") as info:
        checks.cross_entropy(wrong)
    assert names_the_mistake in info.value.hint
    assert checks.results()["cross_entropy"].status == "failed"


# --------------------------------------------------------------------------- lr_schedule


def lr_reference(step, warmup_steps, max_steps, max_lr, min_lr):
    return lr_at(step, warmup_steps, max_steps, max_lr, min_lr)


def lr_written_differently(step, warmup_steps, max_steps, max_lr, min_lr):
    """Clamp first, then one formula per phase, with the cosine written through sin^2."""
    if step >= max_steps:
        return min_lr
    if step < warmup_steps:
        return step / warmup_steps * max_lr
    p = (step - warmup_steps) / (max_steps - warmup_steps)
    return max_lr - (max_lr - min_lr) * math.sin(math.pi * p / 2) ** 2


def lr_off_by_one(step, warmup_steps, max_steps, max_lr, min_lr):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    return lr_at(step, warmup_steps, max_steps, max_lr, min_lr)


def lr_to_zero(step, warmup_steps, max_steps, max_lr, min_lr):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= max_steps:
        return 0.0
    p = (step - warmup_steps) / (max_steps - warmup_steps)
    return 0.5 * max_lr * (1 + math.cos(math.pi * p))


def lr_over_max_steps(step, warmup_steps, max_steps, max_lr, min_lr):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= max_steps:
        return min_lr
    p = step / max_steps
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * p))


def lr_not_clamped(step, warmup_steps, max_steps, max_lr, min_lr):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    p = (step - warmup_steps) / (max_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * p))


def lr_tensor(step, warmup_steps, max_steps, max_lr, min_lr):
    return torch.tensor(lr_at(step, warmup_steps, max_steps, max_lr, min_lr))


def lr_linear(step, warmup_steps, max_steps, max_lr, min_lr):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= max_steps:
        return min_lr
    return max_lr - (max_lr - min_lr) * (step - warmup_steps) / (max_steps - warmup_steps)


def lr_divides_by_zero(step, warmup_steps, max_steps, max_lr, min_lr):
    if step >= max_steps:
        return min_lr
    warm = min(1.0, step / warmup_steps)
    if warm < 1:
        return max_lr * warm
    p = (step - warmup_steps) / (max_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * p))


def lr_not_yet(step, warmup_steps, max_steps, max_lr, min_lr):
    raise NotImplementedError("Exercise: replace this line with your solution")


@pytest.mark.parametrize("solution", [lr_reference, lr_written_differently])
def test_lr_schedule_accepts_correct_solutions(solution, capsys):
    checks.lr_schedule(solution)
    out = capsys.readouterr().out
    assert out.startswith("\u2713 checks.lr_schedule passed")
    assert checks.results()["lr_schedule"].status == "passed"


@pytest.mark.parametrize(
    ("wrong", "names_the_mistake"),
    [
        (lr_off_by_one, "off by one"),
        (lr_to_zero, "decays to 0 instead of to min_lr"),
        (lr_over_max_steps, "over max_steps instead of (max_steps - warmup_steps)"),
        (lr_not_clamped, "not clamped after max_steps"),
        (lr_tensor, "torch.Tensor; return a Python float"),
        (lr_linear, "straight line"),
        (lr_divides_by_zero, "With warmup_steps=0 there is no warm-up"),
    ],
)
def test_lr_schedule_names_the_mistake(wrong, names_the_mistake):
    with pytest.raises(checks.CheckFailed, match="checks.lr_schedule") as info:
        checks.lr_schedule(wrong)
    assert names_the_mistake in info.value.hint
    assert checks.results()["lr_schedule"].status == "failed"


# --------------------------------------------------------------------------- adamw_step


def adamw_written_differently(param, grad, m, v, step, lr, betas, eps, weight_decay):
    """The decay folded into the update, and the bias corrections applied separately."""
    b1, b2 = betas
    m = torch.lerp(m, grad, 1 - b1)
    v = torch.addcmul(v * b2, grad, grad, value=1 - b2)
    denom = (v / (1 - b2**step)).sqrt() + eps
    update = (m / (1 - b1**step)) / denom + weight_decay * param
    return param - lr * update, m, v


def adamw_via_torch(param, grad, m, v, step, lr, betas, eps, weight_decay):
    """Let torch.optim.AdamW do the step, with its state set to (step - 1, m, v)."""
    p = torch.nn.Parameter(param.clone())
    opt = torch.optim.AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    opt.state[p] = {
        "step": torch.tensor(float(step - 1)),
        "exp_avg": m.clone(),
        "exp_avg_sq": v.clone(),
    }
    p.grad = grad.clone()
    opt.step()
    return p.detach(), opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]


def _adamw(param, grad, m, v, step, lr, betas, eps, wd, **how):
    """AdamW with one thing changed, as named by `how`."""
    b1, b2 = (betas[1], betas[0]) if how.get("swap") else betas
    if how.get("l2"):
        grad = grad + wd * param
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad * grad
    t = how.get("t", step)
    if how.get("no_correction"):
        m_hat, v_hat = m, v
    else:
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    if how.get("eps_inside"):
        denom = (v_hat + eps).sqrt()
    elif how.get("no_sqrt"):
        denom = v_hat + eps
    else:
        denom = v_hat.sqrt() + eps
    decayed = param if how.get("l2") else param * (1 - lr * wd)
    return decayed - lr * m_hat / denom, m, v


def adamw_no_bias_correction(*args):
    return _adamw(*args, no_correction=True)


def adamw_l2(*args):
    return _adamw(*args, l2=True)


def adamw_eps_inside(*args):
    return _adamw(*args, eps_inside=True)


def adamw_no_sqrt(*args):
    return _adamw(*args, no_sqrt=True)


def adamw_betas_swapped(*args):
    return _adamw(*args, swap=True)


def adamw_step_from_zero(param, grad, m, v, step, *rest):
    return _adamw(param, grad, m, v, step, *rest, t=step - 1)


def adamw_step_plus_one(param, grad, m, v, step, *rest):
    return _adamw(param, grad, m, v, step, *rest, t=step + 1)


def adamw_in_place(param, grad, m, v, step, lr, betas, eps, weight_decay):
    b1, b2 = betas
    m.mul_(b1).add_(grad, alpha=1 - b1)
    v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
    param.mul_(1 - lr * weight_decay)
    denom = (v / (1 - b2**step)).sqrt() + eps
    param.sub_(lr * (m / (1 - b1**step)) / denom)
    return param, m, v


def adamw_returns_hats(param, grad, m, v, step, lr, betas, eps, weight_decay):
    b1, b2 = betas
    new_param, m, v = adamw_reference(param, grad, m, v, step, lr, betas, eps, weight_decay)
    return new_param, m / (1 - b1**step), v / (1 - b2**step)


def adamw_decay_after(param, grad, m, v, step, lr, betas, eps, weight_decay):
    new_param, m, v = adamw_reference(param, grad, m, v, step, lr, betas, eps, 0.0)
    return new_param * (1 - lr * weight_decay), m, v


def adamw_only_param(param, grad, m, v, step, lr, betas, eps, weight_decay):
    return adamw_reference(param, grad, m, v, step, lr, betas, eps, weight_decay)[0]


def adamw_not_yet(param, grad, m, v, step, lr, betas, eps, weight_decay):
    raise NotImplementedError("Exercise: replace this line with your solution")


@pytest.mark.parametrize("solution", [adamw_reference, adamw_written_differently, adamw_via_torch])
def test_adamw_step_accepts_correct_solutions(solution, capsys):
    checks.adamw_step(solution)
    out = capsys.readouterr().out
    assert out.startswith("\u2713 checks.adamw_step passed")
    assert checks.results()["adamw_step"].status == "passed"


@pytest.mark.parametrize(
    ("wrong", "names_the_mistake"),
    [
        (adamw_no_bias_correction, "no bias correction"),
        (adamw_l2, "added to the gradient (L2 regularisation"),
        (adamw_eps_inside, "eps is inside the square root"),
        (adamw_no_sqrt, "square root is missing"),
        (adamw_betas_swapped, "betas are swapped"),
        (adamw_step_from_zero, "step counts from 1"),
        (adamw_step_plus_one, "uses step + 1"),
        (adamw_in_place, "in place"),
        (adamw_returns_hats, "bias-corrected m_hat and v_hat"),
        (adamw_decay_after, "applied after the Adam update"),
        (adamw_only_param, "return the tuple (param, m, v)"),
    ],
)
def test_adamw_step_names_the_mistake(wrong, names_the_mistake):
    with pytest.raises(checks.CheckFailed, match="checks.adamw_step") as info:
        checks.adamw_step(wrong)
    assert names_the_mistake in info.value.hint
    assert checks.results()["adamw_step"].status == "failed"


# --------------------------------------------------------------------------- all three


@pytest.mark.parametrize(
    ("check", "stub"),
    [
        (checks.cross_entropy, ce_not_yet),
        (checks.lr_schedule, lr_not_yet),
        (checks.adamw_step, adamw_not_yet),
    ],
)
def test_not_implemented_yet(check, stub, capsys):
    check(stub)
    out = capsys.readouterr().out
    assert "not implemented yet" in out
    assert checks.results()[check.__name__].status == "not implemented"


def test_the_checks_are_registered():
    assert {"cross_entropy", "lr_schedule", "adamw_step"} <= set(checks.available())


# --------------------------------------------------------------------------- train_step
# Written here, not taken from the check module: the steps a learner could hand in.


def step_reference(model, optimizer, x, y, lr, grad_clip):
    for group in optimizer.param_groups:
        group["lr"] = lr
    logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def step_zero_first_by_hand(model, optimizer, x, y, lr, grad_clip):
    """Another correct step: zero first, log_softmax + gather, the norm clipped by hand."""
    model.zero_grad(set_to_none=False)
    for group in optimizer.param_groups:
        group.update(lr=float(lr))
    log_probs = torch.log_softmax(model(x), dim=-1)
    loss = -log_probs.gather(-1, y[..., None]).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    factor = min(1.0, grad_clip / (float(norm) + 1e-6))
    for g in grads:
        g.mul_(factor)
    optimizer.step()
    return float(loss.detach())


def step_no_zero_grad(model, optimizer, x, y, lr, grad_clip):
    for group in optimizer.param_groups:
        group["lr"] = lr
    logits = model(x)
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()


def step_clip_after(model, optimizer, x, y, lr, grad_clip):
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    loss.backward()
    optimizer.step()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.zero_grad()
    return loss.item()


def step_no_clip(model, optimizer, x, y, lr, grad_clip):
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def step_lr_not_set(model, optimizer, x, y, lr, grad_clip):
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def step_lr_first_group(model, optimizer, x, y, lr, grad_clip):
    optimizer.param_groups[0]["lr"] = lr
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def step_lr_after(model, optimizer, x, y, lr, grad_clip):
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad()
    return loss.item()


def step_sum(model, optimizer, x, y, lr, grad_clip):
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def step_targets_x(model, optimizer, x, y, lr, grad_clip):
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = F.cross_entropy(model(x).flatten(0, 1), x.flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def step_shift_again(model, optimizer, x, y, lr, grad_clip):
    for group in optimizer.param_groups:
        group["lr"] = lr
    logits = model(x)[:, :-1]
    loss = F.cross_entropy(logits.flatten(0, 1), y[:, 1:].flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def step_clip_value(model, optimizer, x, y, lr, grad_clip):
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    loss.backward()
    torch.nn.utils.clip_grad_value_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def step_returns_tensor(model, optimizer, x, y, lr, grad_clip):
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad()
    return loss


def step_loss_after_update(model, optimizer, x, y, lr, grad_clip):
    """Steps correctly, but returns the loss of the updated weights."""
    step_reference(model, optimizer, x, y, lr, grad_clip)
    with torch.no_grad():
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()


def step_not_yet(model, optimizer, x, y, lr, grad_clip):
    raise NotImplementedError("Exercise: replace this line with your solution")


@pytest.mark.parametrize("solution", [train_step_library, step_reference, step_zero_first_by_hand])
def test_train_step_accepts_correct_solutions(solution, capsys):
    checks.train_step(solution)
    out = capsys.readouterr().out
    assert out.startswith("\u2713 checks.train_step passed: ")
    assert checks.results()["train_step"].status == "passed"


@pytest.mark.parametrize(
    ("wrong", "names_the_mistake"),
    [
        (step_no_zero_grad, "gradients are never zeroed"),
        (step_clip_after, "not clipped before the step"),
        (step_no_clip, "not clipped before the step"),
        (step_lr_not_set, "the learning rate was not set"),
        (step_lr_first_group, "only some groups were set"),
        (step_lr_after, "set after optimizer.step()"),
        (step_sum, "a sum instead of a mean"),
        (step_targets_x, "compares the logits with the inputs x"),
        (step_shift_again, "shifted once more"),
        (step_clip_value, "clip_grad_value_"),
        (step_returns_tensor, "returned a tensor"),
        (step_loss_after_update, "computed before the step"),
    ],
)
def test_train_step_names_the_mistake(wrong, names_the_mistake):
    with pytest.raises(checks.CheckFailed, match="checks.train_step") as info:
        checks.train_step(wrong)
    assert names_the_mistake in info.value.hint
    assert checks.results()["train_step"].status == "failed"


def test_train_step_reference_is_the_step_that_train_runs():
    """The library's step (the check's reference) equals a step written here; clipping acts."""
    from llama_edu.checks import training

    for kind, lrs, clips in training._STEP_SCENARIOS:
        initial = training._step_model().state_dict()
        ref = training._run_steps(training._train_step, kind, lrs, clips, initial)
        mine = training._run_steps(step_reference, kind, lrs, clips, initial)
        assert ref[0] == pytest.approx(mine[0], rel=1e-6)
        for a, b in zip(ref[1], mine[1], strict=True):
            torch.testing.assert_close(a, b)
        unclipped = training._run_steps(step_no_clip, kind, lrs, clips, initial)
        assert not torch.allclose(unclipped[1][-1], ref[1][-1], atol=1e-4)


def test_train_step_keeps_the_callers_random_state():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.train_step(step_reference)
    torch.testing.assert_close(torch.rand(3), expected)


def test_train_step_not_implemented(capsys):
    checks.train_step(step_not_yet)
    assert "checks.train_step: not implemented yet" in capsys.readouterr().out
    assert checks.results()["train_step"].status == "not implemented"
