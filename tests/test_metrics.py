"""llama_edu.metrics.auc against the pair-counting definition, written here."""

from __future__ import annotations

import pytest
import torch

from llama_edu.metrics import auc


def auc_by_pairs(pos: torch.Tensor, neg: torch.Tensor) -> float:
    wins = 0.0
    for s in pos.tolist():
        for c in neg.tolist():
            wins += 1.0 if s > c else 0.5 if s == c else 0.0
    return wins / (len(pos) * len(neg))


def test_worked_example_of_chapter_11():
    # the pairs 3>0, 3>2, 1>0, 1<2, 2>0, 2=2 give 1+1+1+0+1+0.5 = 4.5 wins of 6
    assert auc(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([0.0, 2.0])) == 0.75


@pytest.mark.parametrize("seed", range(5))
def test_equals_pair_counting_with_many_ties(seed):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randint(0, 5, (int(torch.randint(1, 30, (), generator=gen)),), generator=gen)
    neg = torch.randint(0, 5, (int(torch.randint(1, 30, (), generator=gen)),), generator=gen)
    assert auc(pos.float(), neg.float()) == pytest.approx(auc_by_pairs(pos, neg), abs=1e-12)


def test_extremes_and_infinite_scores():
    assert auc(torch.tensor([5.0, 6.0]), torch.tensor([1.0])) == 1.0
    assert auc(torch.tensor([1.0]), torch.tensor([5.0, 6.0])) == 0.0
    assert auc(torch.full((4,), -3.0), torch.full((7,), -3.0)) == 0.5
    minus_inf = torch.tensor([float("-inf"), float("-inf")])
    assert auc(torch.tensor([-40.0, -50.0]), minus_inf) == 1.0


@pytest.mark.parametrize(
    ("pos", "neg", "words"),
    [
        (torch.tensor([]), torch.tensor([1.0]), "non-empty 1-D"),
        (torch.ones(2, 2), torch.tensor([1.0]), "non-empty 1-D"),
        (torch.tensor([float("nan")]), torch.tensor([1.0]), "NaN"),
    ],
)
def test_bad_input_is_explained(pos, neg, words):
    with pytest.raises(ValueError, match=words):
        auc(pos, neg)
