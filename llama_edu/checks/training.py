"""Checks for the training chapter: cross-entropy, the schedule, one AdamW step, a training step."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .. import train as ref
from ..model import Llama, ModelArgs
from ._core import Mistake, call, check, close, expect_tensor, fail, match_mistakes

# --------------------------------------------------------------------------- cross_entropy

_CE_HINT = (
    "Expected the mean over the N rows of logsumexp(logits[i]) - logits[i, targets[i]] "
    "(natural log), a tensor of shape ()."
)


@check
def cross_entropy(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(logits (N, V), targets (N,)) -> Tensor ()`: mean cross-entropy in nats."""
    gen = torch.Generator().manual_seed(0)
    cases: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    for n, v in [(4, 5), (6, 11), (3, 2)]:  # N != V, so a softmax over the wrong axis shows
        logits = torch.randn(n, v, generator=gen) * 2
        targets = torch.randint(0, v, (n,), generator=gen)
        cases.append((f"logits of shape ({n}, {v})", logits, targets))
    for label, logits, targets in cases:
        _check_ce_case(fn, label, logits, targets)

    # Large logits: exp(1000) is inf in float32, and a probability of e^-305 is 0.
    big = torch.tensor([[1000.0, 1001.0, 1002.0, 999.0], [-5.0, 300.0, 0.0, 2.0]])
    big_targets = torch.tensor([0, 0])
    out = call(fn, big.clone(), big_targets.clone())
    if isinstance(out, torch.Tensor) and out.numel() and not torch.isfinite(out).all():
        fail(
            "with logits around 1000 (and a target whose probability is e^-305) the result is "
            "inf or nan: the computation is not numerically stable. exp(1000) overflows float32, "
            "and log(softmax) takes the log of a probability that rounds to 0. Use "
            "loss_i = logsumexp(logits[i]) - logits[i, target_i], with the maximum subtracted "
            "inside the logsumexp (or torch.logsumexp)."
        )
    _check_ce_case(fn, "large logits (around 1000 and 300)", big, big_targets)

    # The gradient must flow: d loss / d logits = (softmax - one_hot) / N.
    logits, targets = cases[0][1].clone().requires_grad_(True), cases[0][2]
    out = call(fn, logits, targets)
    if not (isinstance(out, torch.Tensor) and out.requires_grad):
        fail(
            "the result is not connected to the logits (requires_grad is False), so "
            "loss.backward() could not train anything. Compute it with torch operations on "
            "`logits` only: no .item(), .detach(), .numpy() or torch.tensor(...) on the way."
        )
    out.backward()
    expected = (torch.softmax(logits.detach(), -1) - F.one_hot(targets, 5)) / len(targets)
    if logits.grad is None or not close(logits.grad, expected):
        fail(
            "the value is right but its gradient is not (softmax - one_hot) / N. Do not "
            "detach part of the computation (e.g. the maximum you subtract is fine to keep "
            "in the graph)."
        )
    return (
        "equals F.cross_entropy on 4 inputs incl. logits near 1000; a scalar mean in nats; "
        "gradient (softmax - one_hot) / N"
    )


def _check_ce_case(
    fn: Callable[..., torch.Tensor], label: str, logits: torch.Tensor, targets: torch.Tensor
) -> None:
    """Fail, naming the likely mistake, unless fn gives the mean cross-entropy here."""
    logits_in, targets_in = logits.clone(), targets.clone()
    out = call(fn, logits_in, targets_in)
    if not torch.equal(logits_in, logits) or not torch.equal(targets_in, targets):
        fail(
            "your function changed `logits` or `targets` in place (e.g. with -= or .sub_). "
            "Compute new tensors and leave the inputs as they are."
        )
    if isinstance(out, float | int) and not isinstance(out, bool):
        fail(
            f"with {label} the result is a Python {type(out).__name__}; return a tensor (no "
            ".item()), so that loss.backward() can compute gradients."
        )
    expected = F.cross_entropy(logits.double(), targets)
    match_mistakes(out, expected, _ce_mistakes(logits, targets), label, _CE_HINT)


def _ce_mistakes(logits: torch.Tensor, targets: torch.Tensor) -> list[Mistake]:
    """Typical wrong cross-entropy results on these inputs, each with the hint that names it."""
    z = logits.double()
    rows = torch.arange(len(targets))
    per_example = F.cross_entropy(z, targets, reduction="none")
    mean = per_example.mean()
    mistakes: list[Mistake] = [
        (
            per_example,
            "you returned one loss per example, shape (N,). The training loss is their mean: "
            "add .mean() at the end.",
        ),
        (
            per_example.sum(),
            "you returned the sum over the examples; return the mean (divide by N), so that "
            "the loss does not grow with the batch size.",
        ),
        (
            mean / math.log(2),
            "the result is in bits (log base 2). Cross-entropy for training uses the natural "
            "log (nats): torch.log / torch.logsumexp, not torch.log2. Bits = nats / ln 2.",
        ),
        (
            -mean,
            "the sign is wrong: the loss is the *negative* log-probability of the target, "
            "-log p >= 0. Your result is log p (negative).",
        ),
        (
            -z[rows, targets].mean(),
            "you took -logits[target] without normalising: subtract logsumexp(logits) of each "
            "row, i.e. loss_i = logsumexp(logits[i]) - logits[i, target_i].",
        ),
        (
            z[rows, targets].mean(),
            "you took logits[target] without normalising and without the minus sign: the loss "
            "is logsumexp(logits[i]) - logits[i, target_i].",
        ),
        (
            -torch.log_softmax(z, dim=0)[rows, targets].mean(),
            "the softmax runs over the batch axis (dim=0). Each row is one prediction over the "
            "V tokens: normalise over dim=-1 (the vocabulary axis).",
        ),
        (
            (1 - torch.softmax(z, dim=-1)[rows, targets]).mean(),
            "you returned 1 - p(target); cross-entropy is -log p(target).",
        ),
        (
            -torch.softmax(z, dim=-1)[rows, targets].mean(),
            "you returned -p(target); take the log: -log p(target).",
        ),
    ]
    return mistakes


# --------------------------------------------------------------------------- lr_schedule

_LR_CONFIGS = [
    (10, 110, 1.0, 0.1),
    (30, 600, 3e-3, 3e-4),
    (4, 20, 2.0, 0.5),
    (0, 50, 0.5, 0.05),
]


@check
def lr_schedule(fn: Callable[..., Any]) -> str:
    """Check `fn(step, warmup_steps, max_steps, max_lr, min_lr) -> float` against lr_at."""
    for warmup, max_steps, max_lr, min_lr in _LR_CONFIGS:
        label = f"warmup_steps={warmup}, max_steps={max_steps}, max_lr={max_lr}, min_lr={min_lr}"
        warm = sorted({0, 1, warmup // 2, warmup - 1} & set(range(warmup)))
        middle = warmup + (max_steps - warmup) // 2
        decay = sorted(
            {warmup, warmup + 1, (warmup + middle) // 2, middle, max_steps - 1, max_steps}
        )
        after = [max_steps + 1, max_steps + max_steps // 4, 2 * max_steps]
        for phase, steps, mistakes in [
            ("the warm-up", warm, _warmup_mistakes),
            ("the cosine decay", decay, _decay_mistakes),
            ("the steps after max_steps", after, _after_mistakes),
        ]:
            _check_lr_phase(fn, label, phase, steps, (warmup, max_steps, max_lr, min_lr), mistakes)
    return (
        "equals lr_at on 4 schedules (incl. warmup_steps=0): 0 at step 0, max_lr at the end "
        "of the warm-up, cosine to min_lr at max_steps, min_lr after; returns floats"
    )


def _lr_call(fn: Callable[..., Any], step: int, cfg: tuple[int, int, float, float]) -> float:
    warmup, max_steps, max_lr, min_lr = cfg
    try:
        out = call(fn, step, warmup, max_steps, max_lr, min_lr)
    except Exception as failure:
        if warmup == 0 and "ZeroDivision" in str(failure):
            fail(
                f"{failure}\nWith warmup_steps=0 there is no warm-up: the cosine starts at "
                "step 0. Only divide by warmup_steps when step < warmup_steps."
            )
        raise
    if isinstance(out, torch.Tensor):
        fail(
            f"at step {step} the result is a torch.Tensor; return a Python float (use "
            "math.cos and math.pi, not torch.cos), because the optimiser's param_groups "
            "hold plain numbers."
        )
    if isinstance(out, bool) or not isinstance(out, int | float):
        fail(f"at step {step} the result is {type(out).__name__}; return a float.")
    return float(out)


def _lr_close(a: list[float], b: list[float], scale: float) -> bool:
    return all(
        math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9 * scale) for x, y in zip(a, b, strict=True)
    )


def _check_lr_phase(
    fn: Callable[..., Any],
    label: str,
    phase: str,
    steps: list[int],
    cfg: tuple[int, int, float, float],
    mistakes: Callable[[int, int, int, float, float], list[tuple[float | None, str]]],
) -> None:
    if not steps:
        return
    got = [_lr_call(fn, s, cfg) for s in steps]
    expected = [ref.lr_at(s, *cfg) for s in steps]
    if _lr_close(got, expected, cfg[2]):
        return
    options = [mistakes(s, *cfg) for s in steps]  # per step: [(value or None, message), ...]
    for index, (_, message) in enumerate(options[0]):
        wrong = [opts[index][0] for opts in options]
        known = [w for w in wrong if w is not None]
        if len(known) == len(wrong) and _lr_close(got, known, cfg[2]):
            fail(f"with {label}, in {phase}: {message}")
    first = next(
        i
        for i, (g, e) in enumerate(zip(got, expected, strict=True))
        if not math.isclose(g, e, rel_tol=1e-6, abs_tol=1e-9 * cfg[2])
    )
    fail(
        f"with {label}, in {phase}: at step {steps[first]} you return {got[first]:.6g}, "
        f"expected {expected[first]:.6g}. The rate rises linearly from 0 at step 0 to max_lr "
        "at warmup_steps, then follows min_lr + 0.5 * (max_lr - min_lr) * (1 + cos(pi * p)) "
        "with p = (step - warmup_steps) / (max_steps - warmup_steps), and stays at min_lr "
        "after max_steps."
    )


def _cosine(progress: float, max_lr: float, min_lr: float) -> float:
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))


def _warmup_mistakes(
    step: int, warmup: int, max_steps: int, max_lr: float, min_lr: float
) -> list[tuple[float | None, str]]:
    return [
        (
            max_lr * (step + 1) / warmup,
            "the warm-up is off by one: it starts at max_lr / warmup_steps instead of 0. At "
            "step 0 the rate is 0: use max_lr * step / warmup_steps.",
        ),
        (
            max_lr,
            "there is no warm-up: the rate is already max_lr. For step < warmup_steps return "
            "max_lr * step / warmup_steps.",
        ),
        (
            max_lr * step / (warmup - 1) if warmup > 1 else None,
            "the warm-up reaches max_lr one step too early: divide by warmup_steps, not "
            "warmup_steps - 1.",
        ),
        (
            min_lr + (max_lr - min_lr) * step / warmup,
            "the warm-up starts at min_lr; it starts at 0: max_lr * step / warmup_steps.",
        ),
    ]


def _decay_mistakes(
    step: int, warmup: int, max_steps: int, max_lr: float, min_lr: float
) -> list[tuple[float | None, str]]:
    progress = (step - warmup) / max(1, max_steps - warmup)
    over_max = (
        "the cosine runs over max_steps instead of (max_steps - warmup_steps): use "
        "progress = (step - warmup_steps) / (max_steps - warmup_steps), which is 0 at the end "
        "of the warm-up and 1 at max_steps."
    )
    return [
        (
            _cosine(progress, max_lr, 0.0),
            "the cosine decays to 0 instead of to min_lr: use min_lr + 0.5 * (max_lr - min_lr) "
            "* (1 + cos(pi * progress)).",
        ),
        (
            min_lr + 0.5 * max_lr * (1 + math.cos(math.pi * progress)),
            "the cosine starts at max_lr + min_lr: its amplitude is (max_lr - min_lr), not "
            "max_lr: min_lr + 0.5 * (max_lr - min_lr) * (1 + cos(pi * progress)).",
        ),
        (_cosine(step / max_steps, max_lr, min_lr), over_max),
        (_cosine((step - warmup) / max_steps, max_lr, min_lr), over_max),
        (
            max_lr - (max_lr - min_lr) * progress,
            "the rate falls on a straight line; the schedule is a cosine: "
            "min_lr + 0.5 * (max_lr - min_lr) * (1 + cos(pi * progress)).",
        ),
        (
            max_lr * step / warmup if warmup else None,
            "the warm-up never stops: for step >= warmup_steps switch to the cosine decay.",
        ),
    ]


def _after_mistakes(
    step: int, warmup: int, max_steps: int, max_lr: float, min_lr: float
) -> list[tuple[float | None, str]]:
    progress = (step - warmup) / max(1, max_steps - warmup)
    return [
        (
            _cosine(progress, max_lr, min_lr),
            "the rate is not clamped after max_steps: the cosine goes on and rises again. For "
            "step >= max_steps return min_lr.",
        ),
        (
            0.0,
            "after max_steps the rate drops to 0; it stays at min_lr.",
        ),
        (
            _cosine(progress, max_lr, 0.0),
            "the rate is not clamped after max_steps (the cosine goes on and rises again), and "
            "it decays to 0 instead of min_lr.",
        ),
    ]


# --------------------------------------------------------------------------- adamw_step

_ADAMW_HINT = (
    "Expected: param * (1 - lr * weight_decay), then m = b1 m + (1 - b1) g, "
    "v = b2 v + (1 - b2) g^2, m_hat = m / (1 - b1^step), v_hat = v / (1 - b2^step), "
    "param - lr * m_hat / (sqrt(v_hat) + eps); return (param, m, v)."
)


@check
def adamw_step(fn: Callable[..., Any]) -> str:
    """Check `fn(param, grad, m, v, step, lr, betas, eps, weight_decay) -> (param, m, v)`."""
    gen = torch.Generator().manual_seed(0)
    cases = []
    shape = (3,)
    cases.append(
        (
            "the first step (step=1, m = v = 0)",
            torch.randn(shape, generator=gen),
            torch.randn(shape, generator=gen),
            torch.zeros(shape),
            torch.zeros(shape),
            1,
            0.1,
            (0.9, 0.999),
            1e-8,
            0.1,
        )
    )
    for step, shape, lr, betas, eps, wd, grad_scale in [
        (7, (4, 3), 0.05, (0.8, 0.95), 1e-8, 0.1, 1.0),
        (3, (5,), 0.01, (0.9, 0.999), 1e-3, 0.2, 1e-3),  # tiny gradients, large eps
        (2, (2, 2), 0.2, (0.5, 0.7), 1e-8, 0.0, 1.0),
    ]:
        grad = torch.randn(shape, generator=gen) * grad_scale
        m = torch.randn(shape, generator=gen) * grad_scale * 0.5
        v = torch.rand(shape, generator=gen) * grad_scale**2
        cases.append(
            (
                f"step={step}, lr={lr}, betas={betas}, eps={eps}, weight_decay={wd}",
                torch.randn(shape, generator=gen),
                grad,
                m,
                v,
                step,
                lr,
                betas,
                eps,
                wd,
            )
        )
    for label, *args in cases:
        _check_adamw_case(fn, label, *args)

    # Several steps in a row, compared with torch.optim.AdamW.
    param = torch.randn(6, generator=gen)
    reference = torch.nn.Parameter(param.clone())
    opt = torch.optim.AdamW([reference], lr=0.05, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    m, v = torch.zeros(6), torch.zeros(6)
    for step in range(1, 6):
        grad = torch.randn(6, generator=gen)
        out = call(fn, param, grad, m, v, step, 0.05, (0.9, 0.95), 1e-8, 0.1)
        param, m, v = _unpack(out, (6,))
        reference.grad = grad.clone()
        opt.step()
    if not close(param, reference.detach()):
        fail(
            "each single step is right, but after 5 steps in a row the result differs from "
            "torch.optim.AdamW. Return the new m and v (not m_hat, v_hat), so that the next "
            "step can use them."
        )
    return (
        "equals llama_edu.train.adamw_step on 4 inputs (first step, eps large, no decay) and "
        "torch.optim.AdamW over 5 steps; inputs unchanged"
    )


def _unpack(out: Any, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not isinstance(out, tuple | list):
        fail(
            f"the result is a {type(out).__name__}; return the tuple (param, m, v) of three "
            "tensors."
        )
    if len(out) != 3:
        fail(
            f"the result is a {type(out).__name__} of length {len(out)}; return the tuple "
            "(param, m, v) of three tensors."
        )
    names = ("param", "m", "v")
    for name, value in zip(names, out, strict=True):
        expect_tensor(value, shape, f"the returned {name}")
    return out[0], out[1], out[2]


def _check_adamw_case(
    fn: Callable[..., Any],
    label: str,
    param: torch.Tensor,
    grad: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    step: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    wd: float,
) -> None:
    inputs = [param, grad, m, v]
    copies = [t.clone() for t in inputs]
    out = call(fn, *copies, step, lr, betas, eps, wd)
    changed = [
        n
        for n, a, b in zip(("param", "grad", "m", "v"), copies, inputs, strict=True)
        if not torch.equal(a, b)
    ]
    if changed:
        fail(
            f"your function changed {', '.join(changed)} in place (e.g. with mul_, add_ or "
            "-=). Compute new tensors and return them; the caller decides what to keep."
        )
    new = _unpack(out, tuple(param.shape))
    if not all(torch.isfinite(t).all() for t in new):
        where = f"with {label} the result at step=1" if step == 1 else f"with {label} the result"
        fail(
            f"{where} contains inf or nan. step counts from 1: the bias "
            "correction divides by 1 - beta**step, which is 0 if step 0 is used. Do not "
            "subtract 1 from step."
        )
    expected = torch.cat(
        [
            t.double().flatten()
            for t in ref.adamw_step(
                param.double(), grad.double(), m.double(), v.double(), step, lr, betas, eps, wd
            )
        ]
    )
    match_mistakes(
        torch.cat([t.flatten() for t in new]),
        expected,
        _adamw_mistakes(param, grad, m, v, step, lr, betas, eps, wd),
        f"{label} (param, m and v compared as one vector)",
        _ADAMW_HINT,
        atol=1e-6,
        rtol=1e-5,
    )


def _adamw_mistakes(
    param: torch.Tensor,
    grad: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    step: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    wd: float,
) -> list[Mistake]:
    """Typical wrong AdamW results on these inputs, each with the hint that names it."""
    p, g, m, v = param.double(), grad.double(), m.double(), v.double()
    b1, b2 = betas

    def result(
        *,
        betas: tuple[float, float] = (b1, b2),
        correct: tuple[int, int] | None = (step, step),
        eps_inside: bool = False,
        sqrt: bool = True,
        l2: bool = False,
        decay: str = "before",
        return_hat: bool = False,
    ) -> torch.Tensor:
        c1, c2 = betas
        grad = g + wd * p if l2 else g
        new_m = c1 * m + (1 - c1) * grad
        new_v = c2 * v + (1 - c2) * grad * grad
        if correct is None:
            m_hat, v_hat = new_m, new_v
        else:
            m_hat = new_m / (1 - c1 ** correct[0])
            v_hat = new_v / (1 - c2 ** correct[1])
        if eps_inside:
            denom = (v_hat + eps).sqrt()
        else:
            denom = (v_hat.sqrt() if sqrt else v_hat) + eps
        update = lr * m_hat / denom
        if l2 or decay == "none":
            new_p = p - update
        elif decay == "before":
            new_p = p * (1 - lr * wd) - update
        elif decay == "after":
            new_p = (p - update) * (1 - lr * wd)
        elif decay == "no lr":
            new_p = p * (1 - wd) - update
        else:  # "subtract": p - lr * wd without the factor p
            new_p = p - lr * wd - update
        kept = (m_hat, v_hat) if return_hat else (new_m, new_v)
        return torch.cat([new_p.flatten(), kept[0].flatten(), kept[1].flatten()])

    mistakes: list[Mistake] = [
        (
            result(correct=None),
            "there is no bias correction: divide m by (1 - beta1**step) and v by "
            "(1 - beta2**step) before the update. Without it the first steps are too large or "
            "too small, because m and v start at 0.",
        ),
        (
            result(l2=True),
            "the weight decay is added to the gradient (L2 regularisation, as in Adam). AdamW "
            "decouples it: leave the gradient alone and shrink the parameter directly, "
            "param * (1 - lr * weight_decay).",
        ),
        (
            result(eps_inside=True),
            "eps is inside the square root: use sqrt(v_hat) + eps, not sqrt(v_hat + eps).",
        ),
        (
            result(sqrt=False),
            "the square root is missing: divide by sqrt(v_hat) + eps, not by v_hat + eps. "
            "v holds squared gradients, so its square root has the units of the gradient.",
        ),
        (
            result(betas=(b2, b1)),
            "the betas are swapped: beta1 (betas[0]) averages the gradient m, beta2 (betas[1]) "
            "averages the squared gradient v.",
        ),
        (
            result(correct=(step + 1, step + 1)),
            "the bias correction uses step + 1: step already counts from 1 (the first update "
            "has step=1), so use 1 - beta**step.",
        ),
        (
            result(return_hat=True),
            "you returned the bias-corrected m_hat and v_hat. Return the raw moving averages "
            "m and v: the correction is applied again, fresh, at every step.",
        ),
        (
            result(decay="none"),
            "the weight decay is missing: multiply the parameter by (1 - lr * weight_decay).",
        ),
        (
            result(decay="after"),
            "the weight decay is applied after the Adam update. Shrink the old parameter first, "
            "param * (1 - lr * weight_decay), then subtract the update (as torch.optim.AdamW "
            "does).",
        ),
        (
            result(decay="no lr"),
            "the weight decay is not scaled by the learning rate: use "
            "param * (1 - lr * weight_decay), not param * (1 - weight_decay).",
        ),
        (
            result(decay="subtract"),
            "the weight decay subtracts lr * weight_decay; it multiplies the parameter: "
            "param * (1 - lr * weight_decay) = param - lr * weight_decay * param.",
        ),
    ]
    if step > 1:
        mistakes.append(
            (
                result(correct=(step - 1, step - 1)),
                "the bias correction uses step - 1: step counts from 1, so use "
                "1 - beta**step (at step=1 that is 1 - beta, never 0).",
            )
        )
    return mistakes


# --------------------------------------------------------------------------- train_step

# The reference is llama_edu.train.train_step (train() runs the same step inline, with gradient
# accumulation, autocast and DDP around it). `_train_step` with a `mistake` makes the typical
# wrong versions, so that the check can recognise them.
_STEP_MISTAKES = {
    "no_zero_grad": (
        "the gradients are never zeroed. loss.backward() adds to the .grad that is already "
        "there, so every step used the sum of all gradients so far. Call "
        "optimizer.zero_grad() after optimizer.step()."
    ),
    "clip_after_step": (
        "the gradient is not clipped before the step: clipping is missing, comes before "
        "loss.backward(), or comes after optimizer.step(), when the step has already used the "
        "gradient. Clip with torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) "
        "between loss.backward() and optimizer.step()."
    ),
    "lr_after_step": (
        "the learning rate is set after optimizer.step(), so each step used the previous "
        "learning rate. Set group['lr'] = lr for every param group before the step."
    ),
    "sum": (
        "the loss is a sum instead of a mean over all positions: the loss and the gradient "
        "grow with the batch size and the sequence length. Use F.cross_entropy with its default "
        "reduction='mean'."
    ),
    "targets_are_inputs": (
        "the loss compares the logits with the inputs x. The targets are y: y[b, t] is the "
        "token that follows x[b, t]."
    ),
    "shifted_again": (
        "the targets are shifted once more. x and y are already shifted by one (y[b, t] is "
        "the token after x[b, t]): compare logits[b, t] with y[b, t], the same position."
    ),
    "clip_value": (
        "each gradient entry is clipped on its own (clip_grad_value_). Clip the norm of all "
        "gradients together with torch.nn.utils.clip_grad_norm_, which keeps the direction."
    ),
}


def _train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float,
    grad_clip: float,
    mistake: str | None = None,
) -> float:
    """One training step, as train() does it: lr, forward, loss, backward, clip, step, zero."""
    if mistake is None:
        return ref.train_step(model, optimizer, x, y, lr, grad_clip)
    if mistake != "lr_after_step":
        for group in optimizer.param_groups:
            group["lr"] = lr
    logits = model(x)  # (batch, seq, vocab)
    if mistake == "shifted_again":
        logits, y = logits[:, :-1], y[:, 1:]
    targets = x if mistake == "targets_are_inputs" else y
    reduction = "sum" if mistake == "sum" else "mean"
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction=reduction)
    loss.backward()
    if mistake == "clip_value":
        torch.nn.utils.clip_grad_value_(model.parameters(), grad_clip)
    elif mistake != "clip_after_step":
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if mistake == "clip_after_step":
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if mistake == "lr_after_step":
        for group in optimizer.param_groups:
            group["lr"] = lr
    if mistake != "no_zero_grad":
        optimizer.zero_grad(set_to_none=True)
    return loss.item()


def _step_model() -> Llama:
    """A tiny grouped-query Llama (about 20 thousand weights): a step takes milliseconds."""
    args = ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=48,
                     multiple_of=16, max_seq_len=32)  # fmt: skip
    with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
        torch.manual_seed(0)  # the same weights in every run
        return Llama(args)


def _step_optimizer(model: torch.nn.Module, kind: str) -> torch.optim.Optimizer:
    """Two param groups (matrices, the rest) whose lr (1e-4) differs from every lr of the check."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    if kind == "SGD":
        return torch.optim.SGD([{"params": matrices}, {"params": others}], lr=1e-4)
    groups = [{"params": matrices, "weight_decay": 0.1}, {"params": others, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95), foreach=False)


# (optimizer, learning rates, gradient clips): clipping is active except at one step (1e3),
# and the learning rate changes at every step, as in a schedule.
_STEP_SCENARIOS = [
    ("SGD", [0.5, 1.0, 0.3, 0.8], [0.05, 0.05, 1e3, 0.1]),
    ("AdamW", [0.01, 0.02, 0.005], [0.05, 1e3, 0.1]),
]


def _step_batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(n):
        rows = torch.randint(0, 48, (3, 13), generator=gen)
        batches.append((rows[:, :-1], rows[:, 1:]))  # (3, 12) inputs and next-token targets
    return batches


def _run_steps(
    step: Callable[..., Any], kind: str, lrs: list[float], clips: list[float], initial: dict
) -> tuple[list[Any], list[torch.Tensor], list[list[float]]]:
    """Run `step` from `initial` weights; return its results, weights and group lrs per step."""
    model = _step_model()
    model.load_state_dict(initial)
    optimizer = _step_optimizer(model, kind)
    outs, weights, group_lrs = [], [], []
    for (x, y), lr, clip in zip(_step_batches(len(lrs)), lrs, clips, strict=True):
        outs.append(call(step, model, optimizer, x.clone(), y.clone(), lr, clip))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]).clone())
        group_lrs.append([float(g["lr"]) for g in optimizer.param_groups])
    return outs, weights, group_lrs


def _as_loss(out: Any, step: int) -> float:
    if isinstance(out, torch.Tensor):
        fail(
            f"step {step} returned a tensor ({out!r:.40}). Return the loss as a Python float "
            "with loss.item(): a tensor keeps the whole computation graph alive, and the "
            "training loop records plain numbers."
        )
    if isinstance(out, bool) or not isinstance(out, int | float):
        fail(f"step {step} returned {type(out).__name__}; return the loss as a Python float.")
    return float(out)


@check
def train_step(fn: Callable[..., Any]) -> str:
    """Check `fn(model, optimizer, x, y, lr, grad_clip) -> float`: one full training step."""
    initial = {k: v.clone() for k, v in _step_model().state_dict().items()}
    for kind, lrs, clips in _STEP_SCENARIOS:
        outs, weights, group_lrs = _run_steps(fn, kind, lrs, clips, initial)
        losses = [_as_loss(out, i) for i, out in enumerate(outs, start=1)]
        for i, (lr, seen) in enumerate(zip(lrs, group_lrs, strict=True), start=1):
            if all(value != lr for value in seen):
                fail(
                    f"with {kind}, after step {i} the learning rate of the param groups is "
                    f"{seen}, but lr={lr} was passed: the learning rate was not set. Set "
                    "group['lr'] = lr for every group in optimizer.param_groups before "
                    "optimizer.step()."
                )
            if any(value != lr for value in seen):
                fail(
                    f"with {kind}, after step {i} the param groups have learning rates {seen}, "
                    f"but lr={lr} was passed: only some groups were set. The optimizer has "
                    "several param groups (weights with and without decay): set the learning "
                    "rate in every group of optimizer.param_groups."
                )
        ref_losses, ref_weights, _ = _run_steps(_train_step, kind, lrs, clips, initial)
        if _same_run(losses, weights, ref_losses, ref_weights):
            continue
        for mistake, message in _STEP_MISTAKES.items():
            wrong = functools.partial(_train_step, mistake=mistake)
            wrong_losses, wrong_weights, _ = _run_steps(wrong, kind, lrs, clips, initial)
            if _same_run(losses, weights, wrong_losses, wrong_weights):
                fail(f"with {kind} over {len(lrs)} steps: {message}")
        for i in range(len(lrs)):
            if not math.isclose(losses[i], ref_losses[i], rel_tol=1e-4, abs_tol=1e-5):
                fail(
                    f"with {kind}, step {i + 1} returned the loss {losses[i]:.6f}; expected "
                    f"{ref_losses[i]:.6f}, the mean cross-entropy of model(x) against y, "
                    "computed before the step changes the weights."
                )
            if not close(weights[i], ref_weights[i]):
                diff = (weights[i] - ref_weights[i]).abs().max().item()
                fail(
                    f"with {kind}, after step {i + 1} the weights differ from the reference "
                    f"step by up to {diff:.3g}. The order is: set the learning rate, forward, "
                    "cross-entropy, backward, clip the gradient norm, optimizer.step(), zero "
                    "the gradients."
                )
    return (
        "the same losses and weights as the reference step over 4 SGD and 3 AdamW steps from "
        "identical weights, with the learning rate set in every param group"
    )


def _same_run(
    losses: list[float],
    weights: list[torch.Tensor],
    other_losses: list[float],
    other_weights: list[torch.Tensor],
) -> bool:
    same_losses = all(
        math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5)
        for a, b in zip(losses, other_losses, strict=True)
    )
    return same_losses and all(close(a, b) for a, b in zip(weights, other_weights, strict=True))
