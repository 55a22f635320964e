"""Tests for llama_edu.workbook_text: the workbook's prose as a small English-Chinese corpus."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from llama_edu.workbook_text import (
    WORKBOOK_TEXT_FILE,
    build_workbook_text,
    markdown_prose,
    read_workbook_text,
    workbook_chapters,
    workbook_text,
    write_workbook_text,
)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


# ---- markdown_prose ------------------------------------------------------------------------

MARKDOWN = """## 3 · A title with `code`

Some **bold** text with $x^2$ and a [link](https://example.org) and
a second line with `wrapped(code,
spans)` in it.

```python
print("never")
```

| a | b |
|---|---|
| 1 | 2 |

- item one
- item two

<details><summary>Hint 1</summary>

$$\\frac{a}{b}
= c$$

</details>"""


def test_markdown_prose_keeps_the_words_only() -> None:
    assert markdown_prose(MARKDOWN) == [
        "3 · A title with",
        "Some bold text with and a link and a second line with in it.",
        "item one item two",
        "Hint 1",
    ]


def test_markdown_prose_keeps_chinese_punctuation_and_numbers() -> None:
    text = "### 练习 2.1 · 统计（难度 ★☆☆）\n\n词元是 `token`，共 $V$ 个。\n1. 第一项"
    assert markdown_prose(text) == ["练习 2.1 · 统计（难度 ★☆☆）", "词元是 ，共 个。 第一项"]


def test_markdown_prose_of_nothing() -> None:
    assert markdown_prose("") == []
    assert markdown_prose("```\ncode only\n```\n\n$$x$$") == []
    with pytest.raises(TypeError, match="must be a str"):
        markdown_prose(b"bytes")  # type: ignore[arg-type]


# ---- building, writing and reading a corpus ------------------------------------------------


def write_translations(folder: Path) -> None:
    folder.mkdir()
    one = {
        "c1": {"en_sha256": "x", "en": "# 00 · Hello `x`", "text": "# 00 · 你好 `x`"},
        "c2": {"en_sha256": "y", "en": "One.\n\nTwo $a$.", "text": "一。\n\n二 $a$。"},
    }
    two = {"d1": {"en_sha256": "z", "en": "Last [link](a.ipynb).", "text": "最后[链接](a.ipynb)。"}}
    (folder / "00_hello.json").write_text(json.dumps(one, ensure_ascii=False), encoding="utf-8")
    (folder / "01_last.json").write_text(json.dumps(two, ensure_ascii=False), encoding="utf-8")
    (folder / "notes.json").write_text("{}", encoding="utf-8")  # not a chapter: ignored


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    write_translations(tmp_path / "zh")
    path = tmp_path / "corpus.json.gz"
    write_workbook_text(build_workbook_text(tmp_path / "zh", source="test"), path)
    return path


def test_build_keeps_cells_in_order_in_both_languages(tmp_path: Path) -> None:
    write_translations(tmp_path / "zh")
    data = build_workbook_text(tmp_path / "zh", source="a test")
    assert data["source"] == "a test"
    assert data["chapters"] == {
        "00_hello": [
            {"id": "c1", "en": "00 · Hello", "zh": "00 · 你好"},
            {"id": "c2", "en": "One.\nTwo .", "zh": "一。\n二 。"},
        ],
        "01_last": [{"id": "d1", "en": "Last link.", "zh": "最后链接。"}],
    }


def test_build_refuses_a_missing_folder_or_an_empty_translation(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no translation files"):
        build_workbook_text(tmp_path)
    (tmp_path / "00_x.json").write_text('{"c": {"en_sha256": "", "en": "Hi", "text": " "}}')
    with pytest.raises(ValueError, match="cell c has no Chinese text"):
        build_workbook_text(tmp_path)


def test_writing_is_byte_identical_and_reads_back(tmp_path: Path, corpus_file: Path) -> None:
    again = tmp_path / "again.json.gz"
    write_workbook_text(read_workbook_text(corpus_file), again)
    assert again.read_bytes() == corpus_file.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))


def test_workbook_text_picks_language_and_chapters(corpus_file: Path) -> None:
    assert workbook_chapters(corpus_file) == ["00_hello", "01_last"]
    assert workbook_text("zh", path=corpus_file) == "00 · 你好\n一。\n二 。\n最后链接。\n"
    assert workbook_text("en", [1], path=corpus_file) == "Last link.\n"
    assert workbook_text("en", range(1), path=corpus_file) == "00 · Hello\nOne.\nTwo .\n"
    assert workbook_text("zh", [1, 0], path=corpus_file).startswith("最后链接。\n00")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"language": "fr"}, ValueError, "language must be one of en, zh"),
        ({"chapters": [7]}, ValueError, "no chapter 7 in the corpus; it has chapters 0 to 1"),
        ({"chapters": []}, ValueError, "chapters is empty"),
        ({"chapters": "01"}, TypeError, "not a str"),
        ({"chapters": [True]}, TypeError, "must be ints"),
        ({"chapters": ["01_last"]}, TypeError, "must be ints"),
    ],
)
def test_workbook_text_rejects_bad_arguments(
    corpus_file: Path, kwargs: dict, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        workbook_text(path=corpus_file, **kwargs)


def test_reading_a_missing_or_broken_file_says_how_to_rebuild(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make_workbook_text.py"):
        read_workbook_text(tmp_path / "nothing.json.gz")
    plain = tmp_path / "plain.json.gz"
    plain.write_text("{}")
    with pytest.raises(ValueError, match="not a readable workbook corpus"):
        read_workbook_text(plain)
    other = tmp_path / "other.json.gz"
    other.write_bytes(gzip.compress(b'{"format": "something/else"}'))
    with pytest.raises(ValueError, match="llama_edu.workbook_text/1"):
        read_workbook_text(other)


# ---- the shipped snapshot ------------------------------------------------------------------


def test_the_shipped_corpus_has_every_chapter_in_both_languages() -> None:
    data = read_workbook_text()
    assert WORKBOOK_TEXT_FILE.is_file()
    assert list(data["chapters"]) == [p.stem for p in NOTEBOOKS]
    assert data["source"].startswith("translations/zh at commit ")
    for chapter, cells in data["chapters"].items():
        assert sum(len(c["zh"]) for c in cells) > 2000, chapter
        assert sum(len(c["en"]) for c in cells) > 4000, chapter


def test_the_shipped_chinese_is_mostly_chinese_and_has_no_markdown_left() -> None:
    zh, en = workbook_text("zh"), workbook_text("en")
    assert sum(map(is_cjk, zh)) / len(zh) > 0.5
    assert sum(map(is_cjk, en)) / len(en) < 0.01
    for text in (zh, en):
        for mark in ("`", "$", "](", "<details", "**", "\n\n"):
            assert mark not in text, mark
