"""The exercise-check framework, exercised through checks.softmax."""

import pytest
import torch

from llama_edu import checks


def reference(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def via_logsumexp(x, dim=-1):
    return torch.exp(x - torch.logsumexp(x, dim=dim, keepdim=True))


def without_max(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


def always_last_dim(x, dim=-1):
    e = torch.exp(x - x.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def always_first_dim(x, dim=-1):
    e = torch.exp(x - x.amax(dim=0, keepdim=True))
    return e / e.sum(dim=0, keepdim=True)


def without_normalisation(x, dim=-1):
    return torch.exp(x - x.amax(dim=dim, keepdim=True))


def divides_by_sqrt(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True).sqrt()


def not_yet(x, dim=-1):
    raise NotImplementedError("Exercise: replace this line with your solution")


@pytest.mark.parametrize("solution", [reference, via_logsumexp])
def test_correct_solutions_pass(solution, capsys):
    checks.softmax(solution)
    out = capsys.readouterr().out
    assert out.startswith("\u2713 checks.softmax passed")
    assert out.count("\n") == 1
    assert checks.results()["softmax"].status == "passed"


@pytest.mark.parametrize(
    ("wrong", "names_the_mistake"),
    [
        (without_max, "Subtract the maximum"),
        (always_last_dim, "is `dim` ignored"),
        (always_first_dim, "normalised over dim 0"),
        (without_normalisation, "normalisation is missing"),
        (divides_by_sqrt, "does not sum to 1"),
    ],
)
def test_wrong_solutions_fail_with_a_named_mistake(wrong, names_the_mistake):
    with pytest.raises(checks.CheckFailed) as info:
        checks.softmax(wrong)
    assert isinstance(info.value, AssertionError)
    assert names_the_mistake in str(info.value)
    assert checks.results()["softmax"].status == "failed"


def test_not_implemented_is_friendly_not_a_stack_dump(capsys):
    checks.softmax(not_yet)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Traceback" not in out
    assert checks.results()["softmax"].status == "not implemented"


def test_a_crashing_candidate_is_reported_with_its_call():
    with pytest.raises(checks.CheckFailed) as info:
        checks.softmax(lambda x: x.softmax(dim=-1))  # no `dim` parameter
    message = str(info.value)
    assert "raised TypeError" in message and "dim=" in message


def test_returning_the_wrong_type_is_named():
    with pytest.raises(checks.CheckFailed, match="should be a torch.Tensor, but it is list"):
        checks.softmax(lambda x, dim=-1: x.tolist())


def test_passing_the_result_instead_of_the_function_is_a_type_error():
    with pytest.raises(TypeError, match="without calling it"):
        checks.softmax(reference(torch.zeros(3)))


def test_ipython_shows_the_hint_not_the_internals():
    with pytest.raises(checks.CheckFailed) as info:
        checks.softmax(without_max)
    shown = info.value._render_traceback_()
    assert shown[0] == "\u2717 checks.softmax failed"
    assert "Subtract the maximum" in shown[-1]


def test_every_check_is_listed_and_reachable():
    names = checks.available()
    assert "softmax" in names
    for name in names:
        assert callable(getattr(checks, name))


def test_reset_results_forgets():
    checks.softmax(reference)
    checks.reset_results()
    assert checks.results() == {}
