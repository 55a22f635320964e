"""The myths-chapter checks (auc, is_causal): each passes correct solutions and names mistakes."""

from __future__ import annotations

import pytest
import torch
from check_harness import table_tests

from llama_edu import checks

# --------------------------------------------------------------------------- auc


def auc_reference(pos, neg):
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).float() + 0.5 * (diff == 0).float()).mean().item()


def auc_by_ranks(pos, neg):
    """Mann-Whitney: rank all scores together (ties get their average rank)."""
    scores = torch.cat([pos, neg]).double()
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    for value in scores.unique():
        same = scores == value
        ranks[same] = ranks[same].mean()
    p, n = len(pos), len(neg)
    return float((ranks[:p].sum() - p * (p + 1) / 2) / (p * n))


def auc_loops(pos, neg):
    """Plain Python, pair by pair."""
    total = 0.0
    for a in pos.tolist():
        for b in neg.tolist():
            total += 1.0 if a > b else 0.5 if a == b else 0.0
    return total / (len(pos) * len(neg))


def auc_ties_zero(pos, neg):
    return (pos[:, None] > neg[None, :]).float().mean().item()


def auc_ties_one(pos, neg):
    return (pos[:, None] >= neg[None, :]).float().mean().item()


def auc_swapped(pos, neg):
    return auc_reference(neg, pos)


def auc_over_p_plus_n(pos, neg):
    diff = pos[:, None] - neg[None, :]
    return (((diff > 0).float() + 0.5 * (diff == 0).float()).sum() / (len(pos) + len(neg))).item()


def auc_zipped(pos, neg):
    diff = torch.stack([a - b for a, b in zip(pos, neg, strict=False)])
    return ((diff > 0).float() + 0.5 * (diff == 0).float()).mean().item()


def auc_matrix(pos, neg):
    diff = pos[:, None] - neg[None, :]
    return (diff > 0).float() + 0.5 * (diff == 0).float()


def auc_sorts_in_place(pos, neg):
    pos.sort()  # harmless
    pos.copy_(pos.sort().values)
    return auc_reference(pos, neg)


def auc_threshold_accuracy(pos, neg):
    """Accuracy at the mean of all scores: not the AUC."""
    cut = torch.cat([pos, neg]).mean()
    return ((pos > cut).float().sum() + (neg <= cut).float().sum()).item() / (len(pos) + len(neg))


# --------------------------------------------------------------------------- is_causal


def causal_reference(model, tokens, vocab_size):
    base = model(tokens)
    for t in range(1, tokens.shape[1]):
        changed = tokens.clone()
        changed[:, t] = (changed[:, t] + 1) % vocab_size
        if not torch.equal(model(changed)[:, :t], base[:, :t]):
            return False
    return True


def causal_random_tokens(model, tokens, vocab_size):
    """Another correct way: random new tokens, a tight tolerance, from the last position down."""
    gen = torch.Generator().manual_seed(5)
    base = model(tokens)
    for t in reversed(range(1, tokens.shape[1])):
        changed = tokens.clone()
        shift = torch.randint(1, vocab_size, (tokens.shape[0],), generator=gen)
        changed[:, t] = (changed[:, t] + shift) % vocab_size
        if not torch.allclose(model(changed)[:, :t], base[:, :t], rtol=0, atol=1e-7):
            return False
    return True


def causal_all_positions(model, tokens, vocab_size):
    base = model(tokens)
    for t in range(1, tokens.shape[1]):
        changed = tokens.clone()
        changed[:, t] = (changed[:, t] + 1) % vocab_size
        if not torch.equal(model(changed), base):
            return False
    return True


def causal_last_token_only(model, tokens, vocab_size):
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % vocab_size
    return torch.equal(model(changed)[:, :-1], model(tokens)[:, :-1])


def causal_previous_position_only(model, tokens, vocab_size):
    base = model(tokens)
    for t in range(1, tokens.shape[1]):
        changed = tokens.clone()
        changed[:, t] = (changed[:, t] + 1) % vocab_size
        if not torch.equal(model(changed)[:, t - 1], base[:, t - 1]):
            return False
    return True


def causal_argmax(model, tokens, vocab_size):
    base = model(tokens).argmax(-1)
    for t in range(1, tokens.shape[1]):
        changed = tokens.clone()
        changed[:, t] = (changed[:, t] + 1) % vocab_size
        if not torch.equal(model(changed).argmax(-1)[:, :t], base[:, :t]):
            return False
    return True


def causal_loose_tolerance(model, tokens, vocab_size):
    base = model(tokens)
    for t in range(1, tokens.shape[1]):
        changed = tokens.clone()
        changed[:, t] = (changed[:, t] + 1) % vocab_size
        if not torch.allclose(model(changed)[:, :t], base[:, :t], atol=1e-2):
            return False
    return True


def causal_token_not_changed(model, tokens, vocab_size):
    base = model(tokens)
    for t in range(1, tokens.shape[1]):
        changed = tokens.clone()
        changed[:, t] = (changed[:, t] + vocab_size) % vocab_size  # the same token again
        if not torch.equal(model(changed)[:, :t], base[:, :t]):
            return False
    return True


def causal_in_place(model, tokens, vocab_size):
    base = model(tokens)
    for t in range(1, tokens.shape[1]):
        tokens[:, t] = (tokens[:, t] + 1) % vocab_size
        if not torch.equal(model(tokens)[:, :t], base[:, :t]):
            return False
    return True


def causal_returns_tensor(model, tokens, vocab_size):
    return torch.tensor(1.0) if causal_reference(model, tokens, vocab_size) else torch.tensor(0.0)


# --------------------------------------------------------------------------- tables

CORRECT = [
    ("auc", auc_reference),
    ("auc", auc_by_ranks),
    ("auc", auc_loops),
    ("is_causal", causal_reference),
    ("is_causal", causal_random_tokens),
]

WRONG = [
    ("auc", auc_ties_zero, ["ties count zero", "one half"]),
    ("auc", auc_ties_one, ["ties count one", ">="]),
    ("auc", auc_swapped, ["1 - AUC", "negative"]),
    ("auc", auc_over_p_plus_n, ["P + N", "P * N"]),
    ("auc", auc_zipped, ["position by position", "every positive"]),
    ("auc", auc_matrix, ["tensor of shape (3, 2)", "mean"]),
    ("auc", auc_sorts_in_place, ["in place"]),
    ("auc", auc_threshold_accuracy, ["expected 0.7500", "one half"]),
    ("is_causal", causal_all_positions, ["causal Llama is not causal", "logits[:, :t]"]),
    ("is_causal", causal_last_token_only, ["position 0 reads token 1", "not only the last"]),
    ("is_causal", causal_previous_position_only, ["reads the last token", "not only position"]),
    ("is_causal", causal_argmax, ["small leak", "argmax"]),
    ("is_causal", causal_loose_tolerance, ["small leak", "loose tolerance"]),
    ("is_causal", causal_token_not_changed, ["without any mask is causal", "really changes"]),
    ("is_causal", causal_in_place, ["in place", "clone"]),
    ("is_causal", causal_returns_tensor, ["returned Tensor", "True or False"]),
]

CHECKS = sorted({case[0] for case in CORRECT})


# the five tests every table of checks gets (tests/check_harness.py)
globals().update(table_tests(CORRECT, WRONG, CHECKS))


def test_a_crash_is_reported_with_the_call():
    def crashes(pos, neg):
        return (pos - neg).mean().item()  # lengths differ: cannot subtract

    with pytest.raises(checks.CheckFailed, match="your function raised RuntimeError"):
        checks.auc(crashes)


def test_is_causal_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.is_causal(causal_reference)
    assert torch.equal(torch.rand(3), expected)


def test_the_toy_models_are_what_the_check_says():
    """The reference answer on each case matches the check's own truth table."""
    from llama_edu.checks.myths import _VOCAB, _causal_cases

    tokens = torch.randint(0, _VOCAB, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for label, model, truth, _ in _causal_cases():
            assert causal_reference(model, tokens, _VOCAB) is truth, label
