"""Measures of how well a score separates two groups (chapter 13: valid and corrupted stories)."""

from __future__ import annotations

import torch


def auc(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> float:
    """The area under the ROC curve: P(a positive score > a negative one), ties counting 1/2.

    Computed from ranks (Mann and Whitney): sort all scores together, give tied scores their
    average rank, and compare the rank sum of the positives with its smallest possible value.
    """
    pos, neg = torch.as_tensor(pos_scores), torch.as_tensor(neg_scores)
    for name, t in (("pos_scores", pos), ("neg_scores", neg)):
        if t.dim() != 1 or t.numel() == 0:
            raise ValueError(
                f"auc: {name} must be a non-empty 1-D tensor of scores, got shape "
                f"{tuple(t.shape)}. Pass one score per example, e.g. torch.tensor([0.3, 1.2])."
            )
        if torch.isnan(t.double()).any():
            raise ValueError(f"auc: {name} contains NaN; a NaN score cannot be ranked.")
    scores = torch.cat([pos.double(), neg.double()])
    values, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()  # the last rank of each distinct value, from 1
    average_rank = ends - (counts.double() - 1) / 2  # tied scores share the mean of their ranks
    ranks = average_rank[inverse]
    p, n = pos.numel(), neg.numel()
    return float((ranks[:p].sum() - p * (p + 1) / 2) / (p * n))
