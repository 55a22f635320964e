"""Check and command-line messages in Chinese: the catalog, the matching, the switch."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from check_harness import assert_chinese

from llama_edu import checks, messages
from llama_edu.messages import (
    catalog,
    catalog_problems,
    message_templates,
    placeholders,
    set_language,
    translate,
)


def _clear_caches():
    for cached in (messages._compiled, messages._translate, messages._english_phrases):
        cached.cache_clear()


@pytest.fixture
def zh(monkeypatch):
    monkeypatch.setenv("LLAMA_EDU_LANG", "zh")
    yield
    set_language(None)


def test_every_message_exists_in_both_languages():
    # Each check, CLI and loss-report message in the code has a Chinese template with the same
    # fields, and the catalog holds nothing the code no longer says.
    assert catalog_problems("zh") == []


def test_every_translation_is_chinese():
    # Frames of one English word ("checks.{check}: {message}") only change their punctuation.
    def words(template):
        return re.findall(r"[A-Za-z][\w-]+", re.sub(r"\{[^{}]*\}", "", template))

    not_chinese = [en for en, zh in catalog("zh").items()
                   if not any("\u4e00" <= ch <= "\u9fff" for ch in zh) and len(words(en)) > 1]
    assert not_chinese == []
    assert catalog("zh")["checks.{check}: {message}"] != "checks.{check}: {message}"


def test_templates_are_read_from_the_source():
    source = '''
"""Docstring, left out."""
def f(x, label):
    """Left out too."""
    fail(f"with {label} the sum is {x.sum():.3g}; expected {{0}}.")
    fail("you forgot the scale")
    key = "head_dim"
'''
    assert message_templates(source) == [
        "with {label} the sum is {x.sum():.3g}; expected {{0}}.", "you forgot the scale"]
    assert placeholders("{b} and {a:.2f} {{c}}") == ["a:.2f", "b"]


def test_translate_fills_fields_and_translates_nested_messages(zh, monkeypatch):
    fake = {
        "with {label}: {message}": "输入为{label}时：{message}",
        "x of shape (2, 3)": "形状为 (2, 3) 的 x",
        "you returned {type(out).__name__}, not a tensor.":
            "你返回的是 {type(out).__name__}，不是张量。",
        "the result differs by up to {diff:.3g}. {otherwise}":
            "结果最多相差 {diff:.3g}。{otherwise}",
    }
    monkeypatch.setattr(messages, "catalog", lambda lang="zh": fake)
    _clear_caches()
    try:
        assert (translate("with x of shape (2, 3): you returned list, not a tensor.")
                == "输入为形状为 (2, 3) 的 x时：你返回的是 list，不是张量。")
        # "...{otherwise}".rstrip() with an empty otherwise drops the space before it
        assert translate("the result differs by up to 0.5.") == "结果最多相差 0.5。"
        # a message quoted with its full stop taken off, and one the catalog does not know
        assert translate("with x of shape (2, 3): you returned int, not a tensor") == (
            "输入为形状为 (2, 3) 的 x时：你返回的是 int，不是张量")
        assert translate("something else entirely") == "something else entirely"
        assert (translate("line one unknown\nx of shape (2, 3)")
                == "line one unknown\n形状为 (2, 3) 的 x")
    finally:
        _clear_caches()


def test_language_comes_from_the_call_then_the_environment(monkeypatch):
    monkeypatch.delenv("LLAMA_EDU_LANG", raising=False)
    assert messages.language() == "en"
    for value in ("zh", "zh_CN", "zh-CN", "zh_CN.UTF-8", "ZH"):
        monkeypatch.setenv("LLAMA_EDU_LANG", value)
        assert messages.language() == "zh", value
    monkeypatch.setenv("LLAMA_EDU_LANG", "klingon")
    assert messages.language() == "en"  # a stray variable does not break the checks
    try:
        set_language("en")
        monkeypatch.setenv("LLAMA_EDU_LANG", "zh")
        assert messages.language() == "en"
        with pytest.raises(ValueError, match="set_language\\('zh'\\)"):
            set_language("fr")
    finally:
        set_language(None)


def test_english_is_untouched_by_default(monkeypatch):
    monkeypatch.delenv("LLAMA_EDU_LANG", raising=False)
    with pytest.raises(checks.CheckFailed, match="RMSNorm is x / sqrt"):
        checks.rms_norm(lambda x, weight, eps: x * 2)


def test_a_check_fails_passes_and_waits_in_chinese(zh, capsys):
    with pytest.raises(checks.CheckFailed) as info:
        checks.rms_norm(lambda x, weight, eps: x * 2)
    assert_chinese(str(info.value))
    assert_chinese("\n".join(info.value._render_traceback_()))

    checks.rms_norm(lambda x, weight, eps: (x.float() * torch.rsqrt(
        x.float().pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * weight)
    assert_chinese(capsys.readouterr().out)

    def not_yet(x, weight, eps):
        raise NotImplementedError

    checks.rms_norm(not_yet)
    assert_chinese(capsys.readouterr().out)
    with pytest.raises(AssertionError) as info:
        checks.require("rms_norm")
    assert_chinese(str(info.value))


@pytest.mark.parametrize("name", checks.available())
def test_a_crashing_solution_is_reported_in_chinese_by_every_check(name, zh):
    def crashes(*args, **kwargs):
        raise ValueError("boom")

    try:
        getattr(checks, name)(crashes)
    except checks.CheckFailed as failure:
        assert_chinese(str(failure))
        assert "boom" in str(failure)
    else:  # pragma: no cover - every check calls the candidate
        pytest.fail(f"checks.{name} accepted a function that raises")


def _cli(*args: str, lang: str = "zh") -> subprocess.CompletedProcess:
    env = {"LLAMA_EDU_LANG": lang, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "llama_edu.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_cli_errors_and_help_in_chinese(tmp_path):
    result = _cli("sample", "--checkpoint", str(tmp_path), "-n", "0")
    assert result.returncode == 2
    assert result.stderr.startswith("llama-edu sample: ")
    assert_chinese(result.stderr)
    assert "0" in result.stderr

    helped = _cli("train", "--help")
    assert helped.returncode == 0
    assert_chinese(helped.stdout)
    english = _cli("sample", "--checkpoint", str(tmp_path), "-n", "0", lang="en")
    assert "-n must be at least 1" in english.stderr
