"""The LayerNorm check: it passes correct solutions and names the typical mistakes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from llama_edu import checks
from llama_edu import norm as lib_norm


def ln_reference(x, weight, bias, eps):
    return lib_norm.layer_norm(x, weight, bias, eps)


def ln_torch(x, weight, bias, eps):
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)


def ln_with_var(x, weight, bias, eps):
    """Written differently: torch.var_mean with the population variance."""
    var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def ln_no_centring(x, weight, bias, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight + bias


def ln_unbiased_var(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(x.var(-1, keepdim=True) + eps) * weight + bias


def ln_eps_outside(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    std = x.std(-1, keepdim=True, unbiased=False)
    return (x - mean) / (std + eps) * weight + bias


def ln_no_bias(x, weight, bias, eps):
    return lib_norm.layer_norm(x, weight, None, eps)


def ln_bias_before_weight(x, weight, bias, eps):
    return (lib_norm.layer_norm(x, torch.ones_like(weight), None, eps) + bias) * weight


def ln_over_axis_0(x, weight, bias, eps):
    mean = x.mean(0, keepdim=True)
    var = (x - mean).pow(2).mean(0, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps) * weight + bias


def ln_rms_of_x(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    return (x - mean) * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight + bias


def ln_no_sqrt(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    return (x - mean) / ((x - mean).pow(2).mean(-1, keepdim=True) + eps) * weight + bias


def ln_ignores_eps(x, weight, bias, eps):
    return lib_norm.layer_norm(x, weight, bias, 1e-5)


def ln_float64(x, weight, bias, eps):
    return lib_norm.layer_norm(x.double(), weight.double(), bias.double(), eps)


CORRECT: list[Callable] = [ln_reference, ln_torch, ln_with_var]

WRONG: list[tuple[Callable, tuple[str, ...]]] = [
    (ln_no_centring, ("did not subtract the mean", "RMSNorm")),
    (ln_unbiased_var, ("n - 1", "unbiased=False")),
    (ln_eps_outside, ("eps is added outside the square root",)),
    (ln_no_bias, ("bias is missing",)),
    (ln_bias_before_weight, ("bias is added before the weight",)),
    (ln_over_axis_0, ("over axis 0", "dim=-1")),
    (ln_rms_of_x, ("root mean square of x", "standard deviation")),
    (ln_no_sqrt, ("square root is missing",)),
    (ln_ignores_eps, ("`eps` argument is ignored", "eps=0.1 was passed")),
    (ln_float64, ("dtype float64", "float32")),
]


@pytest.mark.parametrize("solution", CORRECT, ids=lambda f: f.__name__)
def test_correct_solutions_pass(solution, capsys):
    checks.layer_norm(solution)
    out = capsys.readouterr().out
    assert out.startswith("\u2713 checks.layer_norm passed: ")
    assert out.count("\n") == 1
    assert checks.results()["layer_norm"].status == "passed"


@pytest.mark.parametrize(("wrong", "words"), WRONG, ids=[case[0].__name__ for case in WRONG])
def test_typical_mistakes_are_named(wrong, words):
    with pytest.raises(checks.CheckFailed) as info:
        checks.layer_norm(wrong)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"
    assert checks.results()["layer_norm"].status == "failed"


def test_not_implemented_is_reported_not_raised(capsys):
    def not_yet(x, weight, bias, eps):
        raise NotImplementedError("Exercise: replace this line with your solution")

    checks.layer_norm(not_yet)
    assert "checks.layer_norm: not implemented yet" in capsys.readouterr().out
    assert checks.results()["layer_norm"].status == "not implemented"
    assert "layer_norm" in checks.available()


def test_in_place_changes_are_named():
    def centres_in_place(x, weight, bias, eps):
        x.sub_(x.mean(-1, keepdim=True))
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight + bias

    with pytest.raises(checks.CheckFailed, match="in place"):
        checks.layer_norm(centres_in_place)


def test_a_crash_is_reported_with_the_formula():
    def wrong_keepdim(x, weight, bias, eps):
        mean = x.mean(-1)
        return (x - mean) * weight + bias

    with pytest.raises(checks.CheckFailed, match="raised RuntimeError(.|\n)*dim=-1, keepdim"):
        checks.layer_norm(wrong_keepdim)
