"""The chapter-10 checks: each passes correct solutions and names the typical mistakes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llama_edu import checks, interpretability

# --------------------------------------------------------------------------- logit_lens


def lens_reference(hidden, norm, output):
    return interpretability.logit_lens(hidden, norm, output)


def lens_written_out(hidden, norm, output):
    """RMSNorm by hand (with its gain), then the output matrix, through F.linear."""
    rms = torch.rsqrt(hidden.pow(2).mean(dim=-1, keepdim=True) + norm.eps)
    return F.linear(hidden * rms * norm.weight, output.weight)


def lens_flattened(hidden, norm, output):
    """Flatten the leading axes, decode row by row, and put the shape back."""
    rows = hidden.reshape(-1, hidden.shape[-1])
    logits = torch.stack([output(norm(row)) for row in rows])
    return logits.reshape(*hidden.shape[:-1], -1)


def lens_no_norm(hidden, norm, output):
    return output(hidden)


def lens_softmax(hidden, norm, output):
    return torch.softmax(output(norm(hidden)), dim=-1)


def lens_log_softmax(hidden, norm, output):
    return torch.log_softmax(output(norm(hidden)), dim=-1)


def lens_no_gain(hidden, norm, output):
    return output(hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + norm.eps))


def lens_layer_norm(hidden, norm, output):
    centred = hidden - hidden.mean(-1, keepdim=True)
    return output(norm(centred))


def lens_no_transpose(hidden, norm, output):
    return norm(hidden) @ output.weight


def lens_norm_last(hidden, norm, output):
    return norm(output(hidden))


def lens_no_output(hidden, norm, output):
    return norm(hidden)


def lens_argmax(hidden, norm, output):
    return output(norm(hidden)).argmax(dim=-1)


def lens_in_place(hidden, norm, output):
    hidden.mul_(torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + norm.eps))
    return output(hidden * norm.weight)


def lens_not_yet(hidden, norm, output):
    raise NotImplementedError("Exercise: replace this line with your solution")


@pytest.mark.parametrize("solution", [lens_reference, lens_written_out, lens_flattened])
def test_logit_lens_accepts_correct_solutions(solution, capsys):
    checks.logit_lens(solution)
    assert capsys.readouterr().out.startswith("\u2713 checks.logit_lens passed")
    assert checks.results()["logit_lens"].status == "passed"


@pytest.mark.parametrize(
    ("wrong", "names_the_mistake"),
    [
        (lens_no_norm, "forgot the final norm"),
        (lens_softmax, "you applied softmax"),
        (lens_log_softmax, "log-probabilities"),
        (lens_no_gain, "left out the norm's learned weight"),
        (lens_layer_norm, "subtracted the mean"),
        (lens_no_transpose, "without transposing"),
        (lens_norm_last, "norm after the output layer"),
        (lens_no_output, "without the output layer"),
        (lens_argmax, "token ids"),
        (lens_in_place, "in place"),
    ],
)
def test_logit_lens_names_the_mistake(wrong, names_the_mistake):
    with pytest.raises(checks.CheckFailed, match="checks.logit_lens") as info:
        checks.logit_lens(wrong)
    assert names_the_mistake in info.value.hint
    assert checks.results()["logit_lens"].status == "failed"


# --------------------------------------------------------------------------- pca_2d


def pca_reference(x):
    return interpretability.pca_2d(x)


def pca_eigh(x):
    """Eigenvectors of the covariance matrix (eigh sorts ascending: take the last two)."""
    centred = x - x.mean(dim=0)
    _, vectors = torch.linalg.eigh(centred.T @ centred)
    return centred @ vectors[:, [-1, -2]]


def pca_u_times_s_flipped(x):
    """U * S from the SVD, with the first component's sign flipped (either sign is fine)."""
    u, s, _ = torch.linalg.svd(x - x.mean(dim=0), full_matrices=False)
    return u[:, :2] * s[:2] * torch.tensor([-1.0, 1.0], dtype=x.dtype)


def pca_not_centred(x):
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    return x @ vh[:2].T


def pca_projects_raw_x(x):
    _, _, vh = torch.linalg.svd(x - x.mean(dim=0), full_matrices=False)
    return x @ vh[:2].T


def pca_returns_u(x):
    u, _, _ = torch.linalg.svd(x - x.mean(dim=0), full_matrices=False)
    return u[:, :2]


def pca_row_means(x):
    centred = x - x.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return centred @ vh[:2].T


def pca_eigh_unsorted(x):
    centred = x - x.mean(dim=0)
    _, vectors = torch.linalg.eigh(centred.T @ centred)
    return centred @ vectors[:, :2]


def pca_eigh_wrong_order(x):
    centred = x - x.mean(dim=0)
    _, vectors = torch.linalg.eigh(centred.T @ centred)
    return centred @ vectors[:, -2:]


def pca_standardised(x):
    z = (x - x.mean(dim=0)) / x.std(dim=0)
    _, _, vh = torch.linalg.svd(z, full_matrices=False)
    return z @ vh[:2].T


def pca_transposed(x):
    return interpretability.pca_2d(x).T


def pca_first_features(x):
    return x[:, :2]


def pca_in_place(x):
    x -= x.mean(dim=0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    return x @ vh[:2].T


def pca_not_yet(x):
    raise NotImplementedError("Exercise: replace this line with your solution")


@pytest.mark.parametrize("solution", [pca_reference, pca_eigh, pca_u_times_s_flipped])
def test_pca_2d_accepts_correct_solutions(solution, capsys):
    checks.pca_2d(solution)
    assert capsys.readouterr().out.startswith("\u2713 checks.pca_2d passed")
    assert checks.results()["pca_2d"].status == "passed"


@pytest.mark.parametrize(
    ("wrong", "names_the_mistake"),
    [
        (pca_not_centred, "did not centre"),
        (pca_projects_raw_x, "projected the raw x"),
        (pca_returns_u, "returned U[:, :2]"),
        (pca_row_means, "mean of each row (dim=1)"),
        (pca_eigh_unsorted, "smallest variance"),
        (pca_eigh_wrong_order, "wrong order"),
        (pca_standardised, "standard deviation"),
        (pca_transposed, "transposed"),
        (pca_first_features, "first two features of x"),
        (pca_in_place, "changed x in place"),
    ],
)
def test_pca_2d_names_the_mistake(wrong, names_the_mistake):
    with pytest.raises(checks.CheckFailed, match="checks.pca_2d") as info:
        checks.pca_2d(wrong)
    assert names_the_mistake in info.value.hint
    assert checks.results()["pca_2d"].status == "failed"


# --------------------------------------------------------------------------- copy_score


def copy_reference(weights, first, later_start):
    return interpretability.copy_score(weights, first, later_start)


def copy_with_a_mask(weights, first, later_start):
    """A 0/1 mask over the keys, multiplied into the query's row."""
    row = weights[..., later_start - 1, :]
    mask = torch.zeros(row.shape[-1], dtype=row.dtype)
    mask[first] = 1.0
    return (row * mask).sum(dim=-1)


def copy_with_a_loop(weights, first, later_start):
    total = torch.zeros(weights.shape[:-2], dtype=weights.dtype)
    for key in first:
        total = total + weights[:, :, later_start - 1, key]
    return total


def copy_own_row(weights, first, later_start):
    return weights[..., later_start, first].sum(-1)


def copy_swapped(weights, first, later_start):
    return weights[..., first, later_start - 1].sum(-1)


def copy_mean(weights, first, later_start):
    return weights[..., later_start - 1, first].mean(-1)


def copy_max(weights, first, later_start):
    return weights[..., later_start - 1, first].amax(-1)


def copy_first_piece(weights, first, later_start):
    return weights[..., later_start - 1, first[0]]


def copy_slice(weights, first, later_start):
    return weights[..., later_start - 1, first[0] : first[-1]].sum(-1)


def copy_whole_row(weights, first, later_start):
    return weights[..., later_start - 1, :].sum(-1)


def copy_averaged_heads(weights, first, later_start):
    return weights[..., later_start - 1, first].sum(-1).mean(-1)


def copy_in_place(weights, first, later_start):
    weights[..., later_start - 1, :] *= 1.0 + 0 * weights[..., later_start - 1, :]
    first.sort(reverse=True)
    return weights[..., later_start - 1, first].sum(-1)


def copy_not_yet(weights, first, later_start):
    raise NotImplementedError("Exercise: replace this line with your solution")


@pytest.mark.parametrize("solution", [copy_reference, copy_with_a_mask, copy_with_a_loop])
def test_copy_score_accepts_correct_solutions(solution, capsys):
    checks.copy_score(solution)
    assert capsys.readouterr().out.startswith("\u2713 checks.copy_score passed")
    assert checks.results()["copy_score"].status == "passed"


@pytest.mark.parametrize(
    ("wrong", "names_the_mistake"),
    [
        (copy_own_row, "row of the later mention itself"),
        (copy_swapped, "swapped queries and keys"),
        (copy_mean, "averaged over the tokens"),
        (copy_max, "largest weight"),
        (copy_first_piece, "only the first token"),
        (copy_slice, "left out the last token"),
        (copy_whole_row, "always 1"),
        (copy_averaged_heads, "shape"),
        (copy_in_place, "in place"),
    ],
)
def test_copy_score_names_the_mistake(wrong, names_the_mistake):
    with pytest.raises(checks.CheckFailed, match="checks.copy_score") as info:
        checks.copy_score(wrong)
    assert names_the_mistake in info.value.hint
    assert checks.results()["copy_score"].status == "failed"


# --------------------------------------------------------------------------- all three


@pytest.mark.parametrize(
    ("check", "stub"),
    [
        (checks.logit_lens, lens_not_yet),
        (checks.pca_2d, pca_not_yet),
        (checks.copy_score, copy_not_yet),
    ],
)
def test_not_implemented_yet(check, stub, capsys):
    check(stub)
    assert "not implemented yet" in capsys.readouterr().out
    assert checks.results()[check.__name__].status == "not implemented"


def test_the_checks_are_registered():
    assert {"logit_lens", "pca_2d", "copy_score"} <= set(checks.available())


def test_the_lens_check_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.logit_lens(lens_reference)
    torch.testing.assert_close(torch.rand(3), expected)
