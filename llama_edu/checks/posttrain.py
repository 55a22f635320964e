"""Checks for post-training: the masked (SFT) loss and the DPO loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import posttrain as ref
from ._core import Mistake, call, check, fail, match_mistakes

# ---------------------------------------------------------------------------- masked_lm_loss


def _token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every position, shape (B, T)."""
    flat = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    return flat.view(targets.shape)


def _shift(mask: torch.Tensor, by: int) -> torch.Tensor:
    """The mask moved `by` positions along T (right for by > 0), filled with False."""
    out = torch.zeros_like(mask)
    if by > 0:
        out[:, by:] = mask[:, :-by]
    else:
        out[:, :by] = mask[:, -by:]
    return out


def _mean_over(losses: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return losses[keep].mean() if keep.any() else torch.tensor(float("nan"))


def _masked_mistakes(logits: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor) -> list:
    losses = _token_losses(logits, targets)
    batch = targets.shape[0]
    row_means = torch.stack([losses[b][keep[b]].mean() for b in range(batch)])
    shifted_targets = _token_losses(logits[:, :-1], targets[:, 1:])
    masked_logits = _token_losses(logits * keep[..., None], targets)
    mistakes: list[Mistake] = [
        (losses.mean(), "this is the mean over ALL positions: the mask is ignored, so the "
         "model would also be trained to write the prompt. Average only where mask is True."),
        (losses[keep].sum(), "this is the SUM of the masked losses; divide it by the number of "
         "masked tokens (mask.sum()), so the loss does not grow with the answer's length."),
        (losses[keep].sum() / batch, "the sum of the masked losses is divided by the batch size "
         "B; divide by the number of masked tokens instead (mask.sum())."),
        (losses[keep].sum() / losses.numel(), "the masked losses are summed but divided by "
         "B * T, the number of all positions; divide by the number of masked tokens."),
        (_mean_over(losses, ~keep), "this is the mean over the positions where mask is FALSE: "
         "the mask is inverted. True marks the answer tokens, the ones to learn."),
        (row_means.mean(), "this is the mean of each row's mean, so a token of a short answer "
         "weighs more than one of a long answer. Take one mean over all masked tokens."),
        (_mean_over(losses, _shift(keep, 1)), "the mask is shifted one position to the right "
         "of the targets. mask[b, t] belongs to targets[b, t] (and logits[b, t]) as given: do "
         "not shift it."),
        (_mean_over(losses, _shift(keep, -1)), "the mask is shifted one position to the left "
         "of the targets. mask[b, t] belongs to targets[b, t] (and logits[b, t]) as given: do "
         "not shift it."),
        (_mean_over(shifted_targets, keep[:, 1:]), "logits and targets are shifted by one more "
         "position; they are already aligned (targets[b, t] is the token that logits[b, t] "
         "predicts), so use them as they are."),
        (_mean_over(shifted_targets, keep[:, :-1]), "logits and targets are shifted by one more "
         "position; they are already aligned (targets[b, t] is the token that logits[b, t] "
         "predicts), so use them as they are."),
        (masked_logits.mean(), "the mask is applied to the logits; it must select which "
         "positions' LOSSES are averaged. Compute every position's cross-entropy, then average "
         "where mask is True."),
        (_mean_over(-logits.gather(-1, targets[..., None]).squeeze(-1), keep), "this is the "
         "mean of -logits[target]: the log-softmax is missing. Use log_softmax (or "
         "F.cross_entropy) before picking the target's entry."),
    ]  # fmt: skip
    return mistakes


def _masked_cases(
    gen: torch.Generator,
) -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
    cases = []
    # answers of different lengths in each row, so per-row means and token means differ
    shapes_and_masks = [
        ((2, 6, 7), [[0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 1, 1]], torch.bool, "a bool mask"),
        ((3, 5, 4), [[0, 1, 1, 1, 1], [0, 0, 0, 1, 0], [1, 0, 0, 1, 1]], torch.float32,
         "a float mask of 0.0 and 1.0"),
        ((1, 8, 9), [[0, 0, 0, 0, 0, 1, 1, 1]], torch.bool, "a bool mask on the last 3 tokens"),
    ]  # fmt: skip
    for (b, t, v), mask, dtype, what in shapes_and_masks:
        logits = torch.randn(b, t, v, generator=gen) * 2
        targets = torch.randint(0, v, (b, t), generator=gen)
        label = f"logits of shape {(b, t, v)} and {what}"
        cases.append((label, logits, targets, torch.tensor(mask).to(dtype)))
    return cases


@check
def masked_lm_loss(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(logits (B, T, V), targets (B, T), mask (B, T)) -> Tensor ()`: the SFT loss.

    The mask is bool or float (0.0 / 1.0); the answer is the mean cross-entropy (nats) over the
    positions where it is true.
    """
    gen = torch.Generator().manual_seed(0)
    for label, logits, targets, mask in _masked_cases(gen):
        inputs = (logits.clone(), targets.clone(), mask.clone())
        out = call(fn, *inputs)
        if not all(torch.equal(a, b) for a, b in zip(inputs, (logits, targets, mask), strict=True)):
            fail("your function changed one of its inputs in place. Compute new tensors.")
        keep = mask.bool()
        expected = ref.masked_lm_loss(logits, targets, keep)
        if isinstance(out, torch.Tensor) and out.shape != () and out.numel() == 1:
            fail(f"with {label} the result has shape {tuple(out.shape)}; return a scalar "
                 "tensor of shape () (e.g. with .mean(), or index [0]).")  # fmt: skip
        match_mistakes(
            out,
            expected,
            _masked_mistakes(logits, targets, keep),
            label,
            "Expected the mean over the masked positions of "
            "logsumexp(logits[b, t]) - logits[b, t, targets[b, t]].",
        )
    logits, targets, mask = _masked_cases(gen)[0][1:]
    logits.requires_grad_(True)
    out = call(fn, logits, targets, mask)
    if not (isinstance(out, torch.Tensor) and out.requires_grad):
        fail("the result is not connected to the logits (requires_grad is False), so "
             "loss.backward() could not train anything. Avoid .item(), .detach() and "
             "torch.tensor(...) on the way.")  # fmt: skip
    out.backward()
    assert logits.grad is not None
    if logits.grad[~mask].abs().max() > 0:
        fail("the value is right but positions outside the mask get a gradient; select the "
             "masked losses without mixing in the others.")  # fmt: skip
    return (
        "the mean cross-entropy over the masked tokens on 3 batches (bool and float masks, "
        "answers of different lengths); no gradient outside the mask"
    )


# ---------------------------------------------------------------------------------- dpo_loss


def _dpo_mistakes(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor,
                  beta: float) -> list[Mistake]:  # fmt: skip
    margin = (pc - rc) - (pr - rr)
    loss = lambda z: -F.logsigmoid(z)
    return [
        (loss(-beta * margin).mean(), "the sign is flipped: this loss falls when the REJECTED "
         "answer becomes more likely. The margin is (π_c − ref_c) − (π_r − ref_r), chosen "
         "first."),
        (loss(margin).mean(), "β is missing: multiply the margin by beta before the "
         "log-sigmoid."),
        (loss(beta * (pc - pr)).mean(), "the reference terms are ignored: subtract ref_c from "
         "π_c and ref_r from π_r, so only the change from the reference model counts."),
        (loss(beta * ((pc + rc) - (pr + rr))).mean(), "the reference log-probabilities are "
         "added instead of subtracted: use (π_c − ref_c) − (π_r − ref_r)."),
        (loss(beta * ((pc - rr) - (pr - rc))).mean(), "the reference terms are swapped: ref_c "
         "goes with π_c and ref_r with π_r."),
        (loss(beta * margin).sum(), "this is the SUM over the pairs; DPO's loss is the MEAN "
         "over the pairs."),
        (F.logsigmoid(beta * margin).mean(), "the minus sign is missing: the loss is −log σ(β · "
         "margin), which is positive; log σ alone is negative and would be minimised by making "
         "the chosen answer LESS likely."),
        (-torch.sigmoid(beta * margin).mean(), "the log is missing: the loss is −log σ(β · "
         "margin), not −σ(β · margin)."),
        (loss(beta * margin).mean() * beta, "the loss is multiplied by β once more; β belongs "
         "inside the log-sigmoid only."),
    ]  # fmt: skip


def _require_finite(out: object, label: str) -> None:
    if isinstance(out, torch.Tensor) and out.numel() and not torch.isfinite(out).all():
        fail(f"with {label} the result is inf or nan, although the loss is finite: for a "
             "large negative z = β · margin, log(sigmoid(z)) underflows and log1p(exp(−z)) "
             "overflows in float32. Use F.logsigmoid(z), or F.softplus(−z), which stay "
             "finite.")  # fmt: skip


@check
def dpo_loss(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
    ref_rejected_logps, beta) -> Tensor ()`: mean of −log σ(β((π_c − ref_c) − (π_r − ref_r))).
    """
    gen = torch.Generator().manual_seed(0)
    cases = []
    for n, beta in [(4, 0.1), (3, 0.5), (5, 2.0)]:
        pc, pr, rc, rr = (-torch.rand(n, generator=gen) * 40 - 5 for _ in range(4))
        cases.append((f"{n} pairs and beta={beta}", pc, pr, rc, rr, beta))
    for label, pc, pr, rc, rr, beta in cases:
        inputs = tuple(t.clone() for t in (pc, pr, rc, rr))
        out = call(fn, *inputs, beta)
        if not all(torch.equal(a, b) for a, b in zip(inputs, (pc, pr, rc, rr), strict=True)):
            fail("your function changed one of its inputs in place. Compute new tensors.")
        expected = ref.dpo_loss(pc, pr, rc, rr, beta)
        _require_finite(out, label)
        if isinstance(out, torch.Tensor) and out.shape != () and out.numel() == 1:
            fail(f"with {label} the result has shape {tuple(out.shape)}; return a scalar "
                 "tensor of shape () (the mean over the pairs).")  # fmt: skip
        match_mistakes(
            out,
            expected,
            _dpo_mistakes(pc, pr, rc, rr, beta),
            label,
            "Expected the mean over pairs of −log σ(β · ((π_c − ref_c) − (π_r − ref_r))).",
        )

    # a margin of −120 nats: σ(−120) is about 1e-52, which float32 rounds to 0
    pc, pr = torch.tensor([-130.0, -20.0]), torch.tensor([-10.0, -21.0])
    rc, rr = torch.tensor([-10.0, -20.0]), torch.tensor([-10.0, -20.0])
    out = call(fn, pc, pr, rc, rr, 1.0)
    _require_finite(out, "a margin of −120 and beta=1.0")
    match_mistakes(out, ref.dpo_loss(pc, pr, rc, rr, 1.0), [], "a margin of −120 and beta=1.0")

    pc = cases[0][1].clone().requires_grad_(True)
    out = call(fn, pc, *cases[0][2:])
    if not (isinstance(out, torch.Tensor) and out.requires_grad):
        fail("the result is not connected to policy_chosen_logps (requires_grad is False), so "
             "DPO could not train the model. Avoid .item(), .detach() and "
             "torch.tensor(...).")  # fmt: skip
    out.backward()
    if pc.grad is None or not (pc.grad < 0).all():
        fail("raising a chosen log-probability must lower the loss (a negative gradient), but "
             "it does not with your function.")  # fmt: skip
    return (
        "equals the mean of −log σ(β · margin) on 3 batches and β values, stays finite for a "
        "margin of −120, and falls as π_c rises"
    )
