"""The Chinese edition stays in step with the English notebooks.

Every English notebook outside UNTRANSLATED has a translation file whose entries match the
current English markdown, cell by cell (by hash), and a built notebook in notebooks_zh/ whose
code cells and outputs are the English ones and whose markdown is the translation. The list
UNTRANSLATED only shrinks: a test fails when a chapter in it has been translated.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from llama_edu.glossary import TERMS
from llama_edu.translations import (
    build_edition,
    load_translations,
    source_hash,
    stale_cells,
    template,
)

ROOT = Path(__file__).resolve().parent.parent
ENGLISH = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TRANSLATIONS = ROOT / "translations" / "zh"
EDITION = ROOT / "notebooks_zh"

UNTRANSLATED: set[str] = set()
"""Chapters whose Chinese translation is still to be written (issue 20)."""

TRANSLATED = [p for p in ENGLISH if p.stem not in UNTRANSLATED]

CORE_TERMS = {  # English (a regular expression) -> the glossary's Chinese term
    r"\btokens?\b": "词元",
    r"\btokenizers?\b": "分词器",
    r"\bembeddings?\b": "嵌入",
    r"\battention\b": "注意力",
    r"\bKV cache\b": "键值缓存",
    r"\bgradients?\b": "梯度",
    r"\bcausal mask\b": "因果掩码",
    r"\bresidual\b": "残差",
    r"\bcross-entropy\b": "交叉熵",
    r"\bbits per character\b": "每字符比特数",
    r"\bentropy floor\b": "熵下界",
    r"\bfeed-forward\b": "前馈",
    r"\blearning rate\b": "学习率",
    r"\bperplexity\b": "困惑度",
    r"\bquantiz": "量化",
}


def _no_display(text: str) -> str:
    return re.sub(r"\$\$.+?\$\$", " ", text, flags=re.S)


def english_markdown(nb) -> str:
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


def test_the_core_terms_are_the_glossarys():
    chinese = {t.chinese for t in TERMS}
    for term in CORE_TERMS.values():
        assert any(term in c for c in chinese), f"{term} is in no glossary entry"


@pytest.mark.parametrize("path", TRANSLATED, ids=lambda p: p.stem)
def test_every_markdown_cell_has_a_current_translation(path):
    nb = nbformat.read(path, as_version=4)
    stale = stale_cells(nb, load_translations(TRANSLATIONS / f"{path.stem}.json"))
    assert not stale, (
        f"{path.name}: {len(stale)} markdown cell(s) changed since their translation or have "
        "none; run `python tools/make_edition.py --template`, translate the entries with empty "
        "text in translations/zh/, then `python tools/make_edition.py`:\n  "
        + "\n  ".join(str(s) for s in stale)
    )


@pytest.mark.parametrize("path", TRANSLATED, ids=lambda p: p.stem)
def test_the_built_notebook_has_the_english_code_and_outputs(path):
    english = nbformat.read(path, as_version=4)
    built_path = EDITION / path.name
    assert built_path.is_file(), f"{built_path} is missing: run `python tools/make_edition.py`"
    built = nbformat.read(built_path, as_version=4)
    assert len(built.cells) == len(english.cells)
    entries = load_translations(TRANSLATIONS / f"{path.stem}.json")
    for index, (en, zh) in enumerate(zip(english.cells, built.cells, strict=True)):
        assert en.cell_type == zh.cell_type and en.get("id") == zh.get("id"), index
        if en.cell_type == "markdown":
            assert zh.source == entries[en.id]["text"], f"cell {en.id}: stale, rebuild"
        else:
            assert (zh.source, zh.get("outputs"), zh.metadata) == (
                en.source, en.get("outputs"), en.metadata), f"cell {index} differs"
    assert built == build_edition(english, entries)


@pytest.mark.parametrize("path", TRANSLATED, ids=lambda p: p.stem)
def test_the_chinese_uses_the_glossarys_terms(path):
    english = english_markdown(nbformat.read(path, as_version=4))
    entries = load_translations(TRANSLATIONS / f"{path.stem}.json")
    chinese = "\n".join(e["text"] for e in entries.values())
    missing = [f"{pattern} -> {term}" for pattern, term in CORE_TERMS.items()
               if re.search(pattern, english, re.IGNORECASE) and term not in chinese]
    assert not missing, f"{path.name}: the English uses these terms, the Chinese never does: " \
        f"{missing}"


@pytest.mark.parametrize("path", TRANSLATED, ids=lambda p: p.stem)
def test_the_translation_keeps_code_math_and_links(path):
    entries = load_translations(TRANSLATIONS / f"{path.stem}.json")
    for cell_id, entry in entries.items():
        en, zh = entry.get("en", ""), entry["text"]
        for name, pattern in (("display math", r"\$\$.+?\$\$"),
                              ("inline math", r"(?<!\$)\$(?!\$)[^$]+\$"),
                              ("link target", r"\]\(([^)]+)\)"), ("heading level", r"(?m)^#+ ")):
            a, b = (sorted(re.findall(pattern, _no_display(text) if name == "inline math"
                                      else text, re.S)) for text in (en, zh))
            assert a == b, f"{path.stem} cell {cell_id}: the {name}s differ: {a} vs {b}"
        assert re.search(r"[\u4e00-\u9fff]", zh) or not re.search(r"[A-Za-z]{4}", en), \
            f"{path.stem} cell {cell_id}: no Chinese in the translation"


def test_untranslated_chapters_are_listed_honestly():
    names = {p.stem for p in ENGLISH}
    assert UNTRANSLATED <= names, UNTRANSLATED - names
    for stem in UNTRANSLATED:
        nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
        entries = load_translations(TRANSLATIONS / f"{stem}.json")
        assert stale_cells(nb, entries), f"{stem} is translated now: remove it from UNTRANSLATED"


def test_a_changed_english_cell_is_named_and_keeps_its_old_translation():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("Hello", id="a1"),
                                         nbformat.v4.new_code_cell("x = 1", id="b2")])
    entries = {"a1": {"en_sha256": source_hash("Hello"), "en": "Hello", "text": "你好"}}
    assert stale_cells(nb, entries) == []
    assert build_edition(nb, entries).cells[0].source == "你好"
    nb.cells[0].source = "Hello, world"
    (stale,) = stale_cells(nb, entries)
    assert (stale.cell_id, stale.reason) == ("a1", "changed")
    with pytest.raises(ValueError, match="cell a1 \\(changed\\)"):
        build_edition(nb, entries)
    updated = template(nb, entries)
    assert updated["a1"]["text"] == "" and updated["a1"]["old_text"] == "你好"
    assert updated["a1"]["en"] == "Hello, world"
    assert [s.reason for s in stale_cells(nb, updated)] == ["empty"]
    assert stale_cells(nb, {})[0].reason == "missing"


def test_a_broken_translation_file_gets_a_clear_error(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_translations(bad)
    bad.write_text(json.dumps({"a": {"text": "你好"}}), encoding="utf-8")
    with pytest.raises(ValueError, match="en_sha256"):
        load_translations(bad)
    assert load_translations(tmp_path / "missing.json") == {}


def test_student_versions_of_the_chinese_edition_hide_the_same_answers(tmp_path):
    from llama_edu import classroom

    english = {p.name: p for p in classroom.write_student_versions(ROOT / "notebooks",
                                                                   tmp_path / "en")}
    chinese = classroom.write_student_versions(EDITION, tmp_path / "zh")
    assert {p.name for p in chinese} == {p.name for p in TRANSLATED}
    for path in chinese:
        zh = nbformat.read(path, as_version=4)
        en = nbformat.read(english[path.name], as_version=4)
        code = [(c.source, c.metadata) for c in zh.cells if c.cell_type == "code"]
        assert code == [(c.source, c.metadata) for c in en.cells if c.cell_type == "code"]
        assert "### BEGIN SOLUTION" not in nbformat.writes(zh), path.name


@pytest.mark.slow
def test_the_chinese_edition_is_graded_like_the_english(tmp_path, monkeypatch):
    """Student version, instructor version and a wrong answer of a Chinese chapter, graded."""
    from llama_edu import classroom

    monkeypatch.setenv("LLAMA_EDU_LANG", "zh")  # the learner's checks speak Chinese
    classroom.write_student_versions(EDITION, tmp_path / "students")
    student = tmp_path / "students" / "00_welcome.ipynb"
    instructor = tmp_path / "instructor" / "00_welcome.ipynb"
    wrong = tmp_path / "wrong" / "00_welcome.ipynb"
    nb = nbformat.read(EDITION / "00_welcome.ipynb", as_version=4)
    instructor.parent.mkdir()
    nbformat.write(nb, instructor)
    answer = next(c for c in nb.cells
                  if c.metadata.get("nbgrader", {}).get("grade_id") == "answer_softmax")
    start = answer.source.index("### BEGIN SOLUTION")
    end = answer.source.index("### END SOLUTION") + len("### END SOLUTION")
    answer.source = (answer.source[:start] + "e = x.exp()\n    return e / e.sum()"
                     + answer.source[end:])  # forgets dim
    wrong.parent.mkdir()
    nbformat.write(nb, wrong)

    grades = {p.parent.name: classroom.grade_notebook(p, time_limit=300)
              for p in (student, instructor, wrong)}
    status = {name: [(e.check, e.status) for e in g.exercises] for name, g in grades.items()}
    assert status == {"students": [("softmax", "not attempted")],
                      "instructor": [("softmax", "passed")],
                      "wrong": [("softmax", "failed")]}
    assert all(g.error is None for g in grades.values())
    message = grades["wrong"].exercises[0].message
    assert any("\u4e00" <= ch <= "\u9fff" for ch in message), message
