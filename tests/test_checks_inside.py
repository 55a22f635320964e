"""The chapter-11 checks: each passes correct solutions and names the typical mistakes."""

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


# --------------------------------------------------------------------------- induction_score


def induction_reference(weights, length):
    return interpretability.induction_score(weights, length)


def induction_with_a_loop(weights, length):
    total = torch.zeros(weights.shape[:-2], dtype=weights.dtype)
    for i in range(length):
        query = 1 + length + i  # token i of the second repeat
        total = total + weights[..., query, 1 + i + 1]  # the token after its earlier copy
    return total / length


def induction_with_a_diagonal(weights, length):
    diagonal = weights.diagonal(offset=1 - length, dim1=-2, dim2=-1)  # keys q - length + 1
    return diagonal[..., -length:].mean(-1)


def induction_same_token(weights, length):
    q = torch.arange(1 + length, 1 + 2 * length)
    return weights[..., q, q - length].mean(-1)


def induction_two_after(weights, length):
    q = torch.arange(1 + length, 1 + 2 * length)
    return weights[..., q, q - length + 2].mean(-1)


def induction_previous(weights, length):
    q = torch.arange(1 + length, 1 + 2 * length)
    return weights[..., q, q - 1].mean(-1)


def induction_no_bos(weights, length):
    q = torch.arange(length, 2 * length)
    return weights[..., q, q - length + 1].mean(-1)


def induction_short_range(weights, length):
    q = torch.arange(1 + length, 2 * length)
    return weights[..., q, q - length + 1].mean(-1)


def induction_whole_diagonal(weights, length):
    return weights.diagonal(offset=1 - length, dim1=-2, dim2=-1).mean(-1)


def induction_sum(weights, length):
    q = torch.arange(1 + length, 1 + 2 * length)
    return weights[..., q, q - length + 1].sum(-1)


def induction_one_number(weights, length):
    q = torch.arange(1 + length, 1 + 2 * length)
    return weights[..., q, q - length + 1].mean()


def induction_in_place(weights, length):
    q = torch.arange(1 + length, 1 + 2 * length)
    weights[..., 0, 0] = 0.0
    return weights[..., q, q - length + 1].mean(-1)


def induction_not_yet(weights, length):
    raise NotImplementedError("Exercise: replace this line with your solution")


@pytest.mark.parametrize(
    "solution", [induction_reference, induction_with_a_loop, induction_with_a_diagonal]
)
def test_induction_score_accepts_correct_solutions(solution, capsys):
    checks.induction_score(solution)
    assert capsys.readouterr().out.startswith("\u2713 checks.induction_score passed")
    assert checks.results()["induction_score"].status == "passed"


@pytest.mark.parametrize(
    ("wrong", "names_the_mistake"),
    [
        (induction_same_token, "earlier occurrence of the token itself"),
        (induction_two_after, "off by one"),
        (induction_previous, "previous-token head"),
        (induction_no_bos, "forgot the <s>"),
        (induction_short_range, "left out the last query"),
        (induction_whole_diagonal, "whole diagonal"),
        (induction_sum, "added the weights up"),
        (induction_one_number, "returned one number"),
        (induction_in_place, "in place"),
    ],
)
def test_induction_score_names_the_mistake(wrong, names_the_mistake):
    with pytest.raises(checks.CheckFailed, match="checks.induction_score") as info:
        checks.induction_score(wrong)
    assert names_the_mistake in info.value.hint
    assert checks.results()["induction_score"].status == "failed"


# --------------------------------------------------------------------------- patch_head


def patch_reference(corrupt, clean, head, position, head_dim):
    return interpretability.patch_head(corrupt, clean, head, position, head_dim)


def patch_with_a_mask(corrupt, clean, head, position, head_dim):
    """A 0/1 mask of the head's features at the position, blended."""
    mask = torch.zeros(corrupt.shape[1:])
    rows = slice(None) if position is None else position
    mask[rows, head * head_dim : (head + 1) * head_dim] = 1.0
    return corrupt * (1 - mask) + clean * mask


def patch_by_heads(corrupt, clean, head, position, head_dim):
    """Split the last axis into (heads, head_dim) and copy one head."""
    out = corrupt.unflatten(-1, (-1, head_dim)).clone()
    source = clean.unflatten(-1, (-1, head_dim))
    if position is None:
        out[:, :, head] = source[:, :, head]
    else:
        out[:, position, head] = source[:, position, head]
    return out.flatten(-2)


def _patch(base, source, rows, cols, batch=slice(None)):
    out = base.clone()
    out[batch, rows, cols] = source[batch, rows, cols]
    return out


def _where(position):
    return slice(None) if position is None else position


def patch_wrong_run(corrupt, clean, head, position, head_dim):
    return _patch(clean, corrupt, _where(position), slice(head * head_dim, (head + 1) * head_dim))


def patch_whole_layer(corrupt, clean, head, position, head_dim):
    return _patch(corrupt, clean, _where(position), slice(None))


def patch_every_position(corrupt, clean, head, position, head_dim):
    return _patch(corrupt, clean, slice(None), slice(head * head_dim, (head + 1) * head_dim))


def patch_head_as_offset(corrupt, clean, head, position, head_dim):
    return _patch(corrupt, clean, _where(position), slice(head, head + head_dim))


def patch_one_short(corrupt, clean, head, position, head_dim):
    cols = slice(head * head_dim, (head + 1) * head_dim - 1)
    return _patch(corrupt, clean, _where(position), cols)


def patch_batch_axis(corrupt, clean, head, position, head_dim):
    out = corrupt.clone()
    cols = slice(head * head_dim, (head + 1) * head_dim)
    out[_where(position), :, cols] = clean[_where(position), :, cols]
    return out


def patch_returns_clean(corrupt, clean, head, position, head_dim):
    return clean.clone()


def patch_copy_lost(corrupt, clean, head, position, head_dim):
    out = corrupt.clone()
    out[:, _where(position), head * head_dim : (head + 1) * head_dim] = 0.0 + clean[
        :, _where(position), head * head_dim : (head + 1) * head_dim]
    return corrupt.clone()


def patch_in_place(corrupt, clean, head, position, head_dim):
    cols = slice(head * head_dim, (head + 1) * head_dim)
    corrupt[:, _where(position), cols] = clean[:, _where(position), cols]
    return corrupt


def patch_not_yet(corrupt, clean, head, position, head_dim):
    raise NotImplementedError("Exercise: replace this line with your solution")


@pytest.mark.parametrize("solution", [patch_reference, patch_with_a_mask, patch_by_heads])
def test_patch_head_accepts_correct_solutions(solution, capsys):
    checks.patch_head(solution)
    assert capsys.readouterr().out.startswith("\u2713 checks.patch_head passed")
    assert checks.results()["patch_head"].status == "passed"


@pytest.mark.parametrize(
    ("wrong", "names_the_mistake"),
    [
        (patch_wrong_run, "patched the wrong run"),
        (patch_whole_layer, "whole layer"),
        (patch_every_position, "at every position"),
        (patch_head_as_offset, "features head .. head + head_dim"),
        (patch_one_short, "left out the last feature"),
        (patch_batch_axis, "batch axis"),
        (patch_returns_clean, "returned the clean activations"),
        (patch_copy_lost, "nothing was patched"),
        (patch_in_place, "changed `corrupt` in place"),
    ],
)
def test_patch_head_names_the_mistake(wrong, names_the_mistake):
    with pytest.raises(checks.CheckFailed, match="checks.patch_head") as info:
        checks.patch_head(wrong)
    assert names_the_mistake in info.value.hint
    assert checks.results()["patch_head"].status == "failed"


@pytest.mark.parametrize(
    ("check", "stub"),
    [(checks.induction_score, induction_not_yet), (checks.patch_head, patch_not_yet)],
)
def test_the_circuit_checks_say_not_implemented_yet(check, stub, capsys):
    check(stub)
    assert "not implemented yet" in capsys.readouterr().out
    assert checks.results()[check.__name__].status == "not implemented"
    assert check.__name__ in checks.available()
