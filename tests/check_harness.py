"""The five tests every table of exercise checks gets, written once.

A test file lists CORRECT = [(check name, solution), ...] and WRONG = [(check name, wrong
solution, words the message must contain), ...], then adds the tests to its own namespace:

    globals().update(table_tests(CORRECT, WRONG, CHECKS))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from llama_edu import checks
from llama_edu.messages import untranslated


def assert_chinese(message: str) -> None:
    """Fail unless a message reads in Chinese: CJK text and no English sentence of the catalog."""
    assert any("\u4e00" <= ch <= "\u9fff" for ch in message), message
    left = untranslated(message)
    assert not left, f"English left in the Chinese message {message!r}: {left}"


def _id(case: tuple) -> str:
    return f"{case[0]}-{case[1].__name__}"


def table_tests(
    correct: Sequence[tuple], wrong: Sequence[tuple], names: Sequence[str]
) -> dict[str, Callable]:
    """Test functions (by name) for the checks `names`, driven by the two tables."""

    @pytest.mark.parametrize(("name", "solution"), correct, ids=[_id(c) for c in correct])
    def test_correct_solutions_pass(name, solution, capsys):
        getattr(checks, name)(solution)
        out = capsys.readouterr().out
        assert out.startswith(f"\u2713 checks.{name} passed: ")
        assert out.count("\n") == 1
        assert checks.results()[name].status == "passed"

    @pytest.mark.parametrize(("name", "wrong", "words"), wrong, ids=[_id(c) for c in wrong])
    def test_typical_mistakes_are_named(name, wrong, words):
        with pytest.raises(checks.CheckFailed) as info:
            getattr(checks, name)(wrong)
        message = str(info.value)
        for word in words:
            assert word in message, f"{word!r} missing from: {message}"
        assert checks.results()[name].status == "failed"

    def test_every_check_rejects_at_least_three_mistakes():
        for name in names:
            assert sum(case[0] == name for case in wrong) >= 3, name
            assert sum(case[0] == name for case in correct) >= 2, name

    @pytest.mark.parametrize(("name", "wrong", "words"), wrong, ids=[_id(c) for c in wrong])
    def test_mistakes_are_named_in_chinese(name, wrong, words, monkeypatch):
        monkeypatch.setenv("LLAMA_EDU_LANG", "zh")
        with pytest.raises(checks.CheckFailed) as info:
            getattr(checks, name)(wrong)
        assert_chinese(str(info.value))

    @pytest.mark.parametrize("name", names)
    def test_not_implemented_is_reported_not_raised(name, capsys):
        def not_yet(*args, **kwargs):
            raise NotImplementedError("Exercise: replace this line with your solution")

        getattr(checks, name)(not_yet)
        out = capsys.readouterr().out
        assert f"checks.{name}: not implemented yet" in out
        assert checks.results()[name].status == "not implemented"

    @pytest.mark.parametrize("name", names)
    def test_checks_are_listed(name):
        assert name in checks.available()
        assert getattr(checks, name).is_check

    return {test.__name__: test for test in (
        test_correct_solutions_pass,
        test_typical_mistakes_are_named,
        test_mistakes_are_named_in_chinese,
        test_every_check_rejects_at_least_three_mistakes,
        test_not_implemented_is_reported_not_raised,
        test_checks_are_listed,
    )}  # fmt: skip
