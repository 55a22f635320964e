"""The post-training checks: each passes correct solutions and names the typical mistakes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from check_harness import table_tests

# ---------------------------------------------------------------------------- masked_lm_loss


def masked_by_weights(logits, targets, mask):
    """Written with log_softmax and a weighted sum."""
    logp = torch.log_softmax(logits, dim=-1)
    nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    weights = mask.to(nll.dtype)
    return (nll * weights).sum() / weights.sum()


def masked_by_ignore_index(logits, targets, mask):
    """F.cross_entropy skips targets equal to ignore_index (-100)."""
    labels = targets.masked_fill(~mask.bool(), -100)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def mask_ignored(logits, targets, mask):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def summed(logits, targets, mask):
    nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return (nll * mask).sum()


def over_batch_size(logits, targets, mask):
    nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return (nll * mask).sum() / targets.shape[0]


def over_all_positions(logits, targets, mask):
    nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return (nll * mask).sum() / targets.numel()


def inverted(logits, targets, mask):
    keep = ~mask.bool()
    return F.cross_entropy(logits[keep], targets[keep])


def mean_of_row_means(logits, targets, mask):
    nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    mask = mask.float()
    return ((nll * mask).sum(1) / mask.sum(1)).mean()


def shifted_again(logits, targets, mask):
    keep = mask[:, 1:].bool()
    return F.cross_entropy(logits[:, :-1][keep], targets[:, 1:][keep])


def mask_on_logits(logits, targets, mask):
    masked = logits * mask[..., None]
    return F.cross_entropy(masked.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def no_log_softmax(logits, targets, mask):
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return -(picked * mask).sum() / mask.sum()


def loss_detached(logits, targets, mask):
    return masked_by_weights(logits.detach(), targets, mask)


# ---------------------------------------------------------------------------------- dpo_loss


def dpo_logsigmoid(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()


def dpo_softplus(pc, pr, rc, rr, beta):
    """-log σ(z) = log(1 + e^-z) = softplus(-z); policy and reference ratios grouped."""
    z = beta * ((pc - pr) - (rc - rr))
    return F.softplus(-z).mean()


def dpo_sign_flipped(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pr - rr) - (pc - rc))).mean()


def dpo_no_beta(pc, pr, rc, rr, beta):
    return -F.logsigmoid((pc - rc) - (pr - rr)).mean()


def dpo_no_reference(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * (pc - pr)).mean()


def dpo_reference_added(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pc + rc) - (pr + rr))).mean()


def dpo_summed(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).sum()


def dpo_no_minus(pc, pr, rc, rr, beta):
    return F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()


def dpo_unstable(pc, pr, rc, rr, beta):
    return -torch.log(torch.sigmoid(beta * ((pc - rc) - (pr - rr)))).mean()


def dpo_log1p_exp(pc, pr, rc, rr, beta):
    z = beta * ((pc - rc) - (pr - rr))
    return torch.log1p(torch.exp(-z)).mean()


def dpo_detached(pc, pr, rc, rr, beta):
    return dpo_logsigmoid(pc.detach(), pr, rc, rr, beta)


CHECKS = ["masked_lm_loss", "dpo_loss"]

CORRECT = [
    ("masked_lm_loss", masked_by_weights),
    ("masked_lm_loss", masked_by_ignore_index),
    ("dpo_loss", dpo_logsigmoid),
    ("dpo_loss", dpo_softplus),
]

WRONG = [
    ("masked_lm_loss", mask_ignored, ["ALL positions", "mask is ignored"]),
    ("masked_lm_loss", summed, ["SUM"]),
    ("masked_lm_loss", over_batch_size, ["batch size"]),
    ("masked_lm_loss", over_all_positions, ["B * T"]),
    ("masked_lm_loss", inverted, ["inverted"]),
    ("masked_lm_loss", mean_of_row_means, ["each row's mean"]),
    ("masked_lm_loss", shifted_again, ["already aligned"]),
    ("masked_lm_loss", mask_on_logits, ["applied to the logits"]),
    ("masked_lm_loss", no_log_softmax, ["log-softmax is missing"]),
    ("masked_lm_loss", loss_detached, ["not connected"]),
    ("dpo_loss", dpo_sign_flipped, ["sign is flipped"]),
    ("dpo_loss", dpo_no_beta, ["β is missing"]),
    ("dpo_loss", dpo_no_reference, ["reference terms are ignored"]),
    ("dpo_loss", dpo_reference_added, ["added instead of subtracted"]),
    ("dpo_loss", dpo_summed, ["SUM over the pairs"]),
    ("dpo_loss", dpo_no_minus, ["minus sign is missing"]),
    ("dpo_loss", dpo_unstable, ["inf or nan", "F.logsigmoid"]),
    ("dpo_loss", dpo_log1p_exp, ["inf or nan"]),
    ("dpo_loss", dpo_detached, ["not connected"]),
]

globals().update(table_tests(CORRECT, WRONG, CHECKS))
