"""The generation checks: top_k_filter and top_p_filter pass correct solutions, name mistakes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llama_edu import checks
from llama_edu.generate import top_k_filter, top_p_filter

NEG_INF = float("-inf")

# --------------------------------------------------------------------------- top_k_filter


def k_threshold(logits, k):
    """Keep what is >= the k-th largest value of the row."""
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return torch.where(logits < kth, torch.full_like(logits, NEG_INF), logits)


def k_loop(logits, k):
    """Row by row with a sort, writing into a copy."""
    out = torch.full_like(logits, NEG_INF)
    flat_in, flat_out = logits.reshape(-1, logits.shape[-1]), out.view(-1, logits.shape[-1])
    for row_in, row_out in zip(flat_in, flat_out, strict=True):
        order = torch.argsort(row_in, descending=True)[:k]
        row_out[order] = row_in[order]
    return out


def k_keeps_k_minus_1(logits, k):
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits <= kth, NEG_INF)


def k_zero_not_inf(logits, k):
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, 0.0)


def k_smallest(logits, k):
    low = torch.topk(logits, k, dim=-1, largest=False).values[..., -1:]
    return logits.masked_fill(logits > low, NEG_INF)


def k_probabilities(logits, k):
    return torch.softmax(k_threshold(logits, k), dim=-1)


def k_whole_tensor(logits, k):
    kth = torch.topk(logits.flatten(), k).values[-1]
    return logits.masked_fill(logits < kth, NEG_INF)


def k_values_only(logits, k):
    return torch.topk(logits, k, dim=-1).values


def k_in_place(logits, k):
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill_(logits < kth, NEG_INF)


def k_not_yet(logits, k):
    raise NotImplementedError("Exercise: replace this line with your solution")


@pytest.mark.parametrize("solution", [top_k_filter, k_threshold, k_loop])
def test_top_k_filter_accepts_correct_solutions(solution, capsys):
    checks.top_k_filter(solution)
    assert capsys.readouterr().out.startswith("\u2713 checks.top_k_filter passed")
    assert checks.results()["top_k_filter"].status == "passed"


@pytest.mark.parametrize(
    ("wrong", "names_the_mistake"),
    [
        (k_keeps_k_minus_1, "only k-1 entries survive"),
        (k_zero_not_inf, "Set them to -inf"),
        (k_smallest, "k *smallest*"),
        (k_probabilities, "you returned probabilities"),
        (k_whole_tensor, "over the whole tensor"),
        (k_values_only, "these are the top-k values"),
        (k_in_place, "in place"),
    ],
)
def test_top_k_filter_names_the_mistake(wrong, names_the_mistake):
    with pytest.raises(checks.CheckFailed, match="checks.top_k_filter") as info:
        checks.top_k_filter(wrong)
    assert names_the_mistake in info.value.hint
    assert checks.results()["top_k_filter"].status == "failed"


def test_top_k_filter_off_by_one_above():
    def keeps_k_plus_1(logits, k):
        return top_k_filter(logits, min(k + 1, logits.shape[-1]))

    with pytest.raises(checks.CheckFailed) as info:
        checks.top_k_filter(keeps_k_plus_1)
    assert "k+1 entries survive" in info.value.hint


def test_top_k_filter_not_implemented(capsys):
    checks.top_k_filter(k_not_yet)
    assert "not implemented yet" in capsys.readouterr().out
    assert checks.results()["top_k_filter"].status == "not implemented"


def test_top_k_filter_unknown_mistake_says_how_many_were_kept():
    def keeps_everything_but_the_last(logits, k):
        return logits.clone().index_fill(-1, torch.tensor([logits.shape[-1] - 1]), NEG_INF)

    with pytest.raises(checks.CheckFailed) as info:
        checks.top_k_filter(keeps_everything_but_the_last)
    assert "entries per row" in info.value.hint


# --------------------------------------------------------------------------- top_p_filter


def p_loop(probs, p):
    """Row by row, in plain Python, with the crossing token kept."""
    flat = probs.reshape(-1, probs.shape[-1]).double()
    out = torch.zeros_like(flat)
    for r, row in enumerate(flat):
        row = row / row.sum()
        order = sorted(range(len(row)), key=lambda j: (-row[j].item(), j))
        mass = 0.0
        for j in order:
            if mass >= p:
                break
            out[r, j] = row[j]
            mass += row[j].item()
        out[r] /= out[r].sum()
    return out.reshape(probs.shape).to(probs.dtype)


def p_mask_then_softmax(probs, p):
    """Vectorised, removing tokens by setting their log-probability to -inf."""
    sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)
    remove_sorted = sorted_probs.cumsum(-1) - sorted_probs >= p
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return torch.softmax(probs.log().masked_fill(remove, NEG_INF), dim=-1)


def _sorted(probs):
    sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)
    before = F.pad(sorted_probs.cumsum(-1)[..., :-1], (1, 0))
    return sorted_probs, order, before


def p_not_renormalised(probs, p):
    sorted_probs, order, before = _sorted(probs)
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs * (before < p))


def p_sorted_order(probs, p):
    sorted_probs, _, before = _sorted(probs)
    kept = sorted_probs * (before < p)
    return kept / kept.sum(-1, keepdim=True)


def p_without_crossing(probs, p):
    sorted_probs, order, _ = _sorted(probs)
    keep = sorted_probs.cumsum(-1) <= p
    keep[..., 0] = True  # the top token is kept, but the crossing one is not
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)
    return kept / kept.sum(-1, keepdim=True)


def p_drops_everything(probs, p):
    sorted_probs, order, _ = _sorted(probs)
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs * (sorted_probs.cumsum(-1) < p))
    return kept / kept.sum(-1, keepdim=True)


def p_meta_sample_top_p(probs, p):
    """Meta's rule (LLaMA generation.py, sample_top_p): remove a token when the mass before it is
    > p, so at an exact tie the token is kept. Its sort is not stable; written here by us."""
    probs_sort, probs_idx = torch.sort(probs, dim=-1, descending=True)
    mask = probs_sort.cumsum(dim=-1) - probs_sort > p
    probs_sort = probs_sort.masked_fill(mask, 0.0)
    probs_sort = probs_sort / probs_sort.sum(dim=-1, keepdim=True)
    return torch.zeros_like(probs).scatter(-1, probs_idx, probs_sort)


def p_hugging_face_rule(probs, p):
    """Hugging Face's TopPLogitsWarper rule, on log-probabilities: sort ascending, remove while the
    cumulative mass is <= 1 - p, always keep the most likely token. Written here by us."""
    logits = probs.log()
    sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
    remove_sorted = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= 1 - p
    remove_sorted[..., -1] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return torch.softmax(logits.masked_fill(remove, NEG_INF), dim=-1)


def p_ties_to_larger_id(probs, p):
    """Meta's rule, but among equal probabilities the larger id comes first (and is kept)."""
    flipped = p_meta_sample_top_p(probs.flip(-1), p)
    return flipped.flip(-1)


def p_float64(probs, p):
    """The chapter's rule, computed and returned in float64."""
    return top_p_filter(probs.double(), p)


def p_less_or_equal_and_ascending_ties(probs, p):
    """`before <= p` written with a stable ascending sort of the negated probabilities."""
    sorted_neg, order = torch.sort(-probs, dim=-1, stable=True)
    sorted_probs = -sorted_neg
    before = sorted_probs.cumsum(-1) - sorted_probs
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs * (before <= p))
    return kept / kept.sum(-1, keepdim=True)


def p_torch_roll(probs, p):
    """Shifts the 'cumsum > p' mask with torch.roll, which wraps the last entry to the front."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    remove = torch.roll(sorted_probs.cumsum(-1) > p, 1, dims=-1)
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(remove, 0.0))
    return kept / kept.sum(-1, keepdim=True)


def p_one_after_crossing(probs, p):
    """Keeps one token more than needed: the mass two tokens before must be below p."""
    sorted_probs, order, before = _sorted(probs)
    before_previous = F.pad(before[..., :-1], (1, 0))
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs * (before_previous < p))
    return kept / kept.sum(-1, keepdim=True)


def p_not_a_top_set(probs, p):
    """Right mass at the exact tie (0.5 + 0.125 + 0.125 = 0.75) but skips the 0.25 token."""
    if probs.shape == (4,) and probs[1] == 0.25 and p == 0.75:
        return torch.tensor([0.5, 0.0, 0.125, 0.125]) / 0.75
    return top_p_filter(probs, p)


def p_ascending(probs, p):
    sorted_probs, order = probs.sort(dim=-1, stable=True)
    before = F.pad(sorted_probs.cumsum(-1)[..., :-1], (1, 0))
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs * (before < p))
    return kept / kept.sum(-1, keepdim=True)


def p_not_yet(probs, p):
    raise NotImplementedError("Exercise: replace this line with your solution")


@pytest.mark.parametrize(
    "solution",
    [
        top_p_filter,
        p_loop,
        p_mask_then_softmax,
        p_meta_sample_top_p,
        p_hugging_face_rule,
        p_ties_to_larger_id,
        p_float64,
        p_less_or_equal_and_ascending_ties,
    ],
)
def test_top_p_filter_accepts_correct_solutions(solution, capsys):
    checks.top_p_filter(solution)
    assert capsys.readouterr().out.startswith("\u2713 checks.top_p_filter passed")
    assert checks.results()["top_p_filter"].status == "passed"


@pytest.mark.parametrize(
    ("wrong", "names_the_mistake"),
    [
        (p_not_renormalised, "renormalise"),
        (p_sorted_order, "sorted order"),
        (p_without_crossing, "crosses p is missing"),
        (p_drops_everything, "crosses p is missing"),
        (p_torch_roll, "torch.roll wraps"),
        (p_one_after_crossing, "differs from the reference"),
        (p_not_a_top_set, "differs from the reference"),
        (p_ascending, "*least* likely"),
    ],
)
def test_top_p_filter_names_the_mistake(wrong, names_the_mistake):
    with pytest.raises(checks.CheckFailed, match="checks.top_p_filter") as info:
        checks.top_p_filter(wrong)
    assert names_the_mistake in info.value.hint
    assert checks.results()["top_p_filter"].status == "failed"


def test_top_p_filter_nan_when_the_top_token_is_dropped():
    def drops_top_when_above_p(probs, p):
        if p == 0.5:
            return torch.full_like(probs, float("nan"))
        return top_p_filter(probs, p)

    with pytest.raises(checks.CheckFailed) as info:
        checks.top_p_filter(drops_top_when_above_p)
    assert "most likely token must always be kept" in info.value.hint


def test_top_p_filter_not_implemented(capsys):
    checks.top_p_filter(p_not_yet)
    assert "not implemented yet" in capsys.readouterr().out


def test_the_tie_case_tells_the_conventions_apart():
    """The check really meets an exact tie: there Meta's rule keeps a third token, ours does not."""
    halves = torch.tensor([0.5, 0.25, 0.125, 0.125])
    assert (top_p_filter(halves, 0.75) > 0).sum() == 2
    assert (p_meta_sample_top_p(halves, 0.75) > 0).sum() == 3
    assert (p_ties_to_larger_id(halves, 0.75) > 0).tolist() == [True, True, False, True]


def test_other_conventions_differ_only_at_ties():
    """Off exact ties the accepted rules give the reference's answer."""
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(50, 30, generator=gen) * 2, -1)
    for rule in (p_meta_sample_top_p, p_hugging_face_rule, p_ties_to_larger_id):
        torch.testing.assert_close(rule(probs, 0.8), top_p_filter(probs, 0.8))
