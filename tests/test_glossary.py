"""The bilingual glossary (llama_edu.glossary): complete entries, search, and an escaped table."""

from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from llama_edu.glossary import TERMS, Term, glossary_table, lookup

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CJK = re.compile(r"[\u4e00-\u9fff]")
FIELDS = [f.name for f in dataclasses.fields(Term)]


def test_at_least_fifty_unique_terms():
    assert len(TERMS) >= 50
    assert len({t.english for t in TERMS}) == len(TERMS)
    assert all(isinstance(t, Term) for t in TERMS)


def test_no_duplicate_english_or_chinese_terms():
    english = [t.english.casefold() for t in TERMS]
    chinese = [t.chinese for t in TERMS]
    assert sorted({e for e in english if english.count(e) > 1}) == []
    assert sorted({c for c in chinese if chinese.count(c) > 1}) == []


@pytest.mark.parametrize("term", TERMS, ids=lambda t: t.english)
def test_every_field_is_filled(term):
    for name in ("english", "chinese", "definition", "definition_zh"):
        value = getattr(term, name)
        assert isinstance(value, str) and value.strip() == value and value, (name, value)
    assert isinstance(term.chapter, int) and not isinstance(term.chapter, bool)


@pytest.mark.parametrize("term", TERMS, ids=lambda t: t.english)
def test_definitions_are_one_sentence(term):
    assert term.definition.endswith(".") and term.definition[0].isupper()
    assert term.definition_zh.endswith("。")
    assert term.definition_zh.count("。") == 1


@pytest.mark.parametrize("term", TERMS, ids=lambda t: t.english)
def test_chinese_fields_contain_chinese_characters(term):
    assert CJK.search(term.chinese), term.chinese
    assert CJK.search(term.definition_zh), term.definition_zh
    assert not CJK.search(term.english + term.definition)


def test_every_chapter_exists_as_a_notebook():
    chapters = sorted({t.chapter for t in TERMS})
    for chapter in chapters:
        found = list(NOTEBOOKS.glob(f"{chapter:02d}_*.ipynb"))
        assert found, f"no notebook for chapter {chapter:02d}"
    assert chapters[0] == 0 and 13 in chapters


def test_terms_are_listed_in_chapter_order():
    chapters = [t.chapter for t in TERMS]
    assert chapters == sorted(chapters)


def test_loss_measures_are_taught_with_the_loss():
    by_name = {t.english: t for t in TERMS}
    for name in ("Bits per character", "Entropy floor", "Bigram model", "Perplexity"):
        assert by_name[name].chapter == by_name["Cross-entropy loss"].chapter == 9, name


def test_the_float16_limits_match_torch():
    import torch

    (term,) = lookup("float16 (half")
    assert "65504" in term.definition and "65520" in term.definition
    assert torch.finfo(torch.float16).max == 65504
    assert torch.tensor(65519.0).half().item() == 65504  # still rounds down to the largest
    assert torch.tensor(65520.0).half().isinf()  # from here on: infinity


def test_terms_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TERMS[0].english = "changed"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("rmsnorm", "RMSNorm"),
        ("RoPE", "Rotary position embedding (RoPE)"),
        ("  kv cache ", "KV cache"),
        ("词元", "Token"),
        ("旋转位置编码", "Rotary position embedding (RoPE)"),
        ("注意力机制", "Attention"),
        ("均方根", "RMSNorm"),
        ("困惑度", "Perplexity"),
    ],
)
def test_lookup_finds_english_and_chinese(query, expected):
    found = [t.english for t in lookup(query)]
    assert expected in found, found


def test_lookup_is_case_insensitive_and_keeps_the_order():
    assert lookup("ATTENTION") == lookup("attention") == lookup("Attention")
    found = lookup("attention")
    assert len(found) >= 5
    assert found == [t for t in TERMS if t in found]


def test_lookup_matches_substrings_only_in_the_names():
    assert lookup("zzz-no-such-term") == []
    # "decoder" appears in several definitions, but only these names contain it
    assert {t.english for t in lookup("decoder")} == {"Decoder-only", "Encoder-decoder"}


@pytest.mark.parametrize("query", ["", "   ", "\n"])
def test_empty_query_is_a_clear_error(query):
    with pytest.raises(ValueError, match="non-empty query"):
        lookup(query)


def test_a_query_must_be_text():
    with pytest.raises(TypeError, match="str"):
        lookup(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str"):
        glossary_table(None)  # type: ignore[arg-type]


class _Cells(HTMLParser):
    """Collects the text of every table cell, and the tags used."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.tags: set[str] = set()
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(table: str) -> _Cells:
    parser = _Cells()
    parser.feed(table)
    return parser


def test_the_whole_table_has_one_row_per_term():
    parsed = _parse(glossary_table())
    header, *rows = parsed.rows
    assert header == ["English", "中文", "Definition", "定义", "Chapter"]
    assert len(rows) == len(TERMS)
    for row, term in zip(rows, TERMS, strict=True):
        assert row == [term.english, term.chinese, term.definition, term.definition_zh,
                       f"{term.chapter:02d}"]
    assert f"{len(TERMS)} of {len(TERMS)} terms" in glossary_table()


def test_a_query_filters_the_table():
    parsed = _parse(glossary_table("注意力"))
    assert len(parsed.rows) - 1 == len(lookup("注意力"))
    assert all("注意力" in row[1] for row in parsed.rows[1:])


def test_html_is_escaped():
    bos = _parse(glossary_table("BOS"))
    assert "<s>" in bos.rows[1][2]  # the definition mentions the token <s> ...
    assert "s" not in bos.tags  # ... as text, not as a strikethrough tag
    assert "&lt;s&gt;" in glossary_table("BOS")
    nasty = glossary_table("<script>alert('x')</script>")
    assert "<script>" not in nasty and "&lt;script&gt;" in nasty
    assert "No term matches" in nasty


def test_no_match_gives_a_table_with_a_note():
    parsed = _parse(glossary_table("zzz"))
    assert parsed.rows[1][0].startswith("No term matches")
    assert "0 of" in glossary_table("zzz")
