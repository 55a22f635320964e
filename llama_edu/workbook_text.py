"""The workbook's own prose in English and Chinese, as a small parallel corpus that ships with it.

`workbook_text` returns the markdown text of the chapters (without code, math, links or
formatting) in English or in the Chinese of the translated edition. Chapter 02 trains a
SentencePiece tokenizer on the Chinese and compares tokens per character in both languages.

The corpus is a snapshot, stored in ``assets/workbook_text.json.gz``: the notebooks' stored
outputs depend on it, so it does not follow every later edit of the translations. The shipped
file was built from ``translations/zh/*.json`` of one commit (its ``source`` field says which)
by ``python tools/make_workbook_text.py`` (`build_workbook_text` and `write_workbook_text`
below); rebuilding it changes chapter 02's numbers, which then needs re-running.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "WORKBOOK_TEXT_FILE",
    "WORKBOOK_TEXT_FORMAT",
    "build_workbook_text",
    "markdown_prose",
    "read_workbook_text",
    "workbook_chapters",
    "workbook_text",
    "write_workbook_text",
]

WORKBOOK_TEXT_FILE = Path(__file__).parent / "assets" / "workbook_text.json.gz"
"""The shipped snapshot of the workbook's prose."""

WORKBOOK_TEXT_FORMAT = "llama_edu.workbook_text/1"
"""The ``format`` field of the snapshot file."""

LANGUAGES = ("en", "zh")

_FENCED_CODE = re.compile(r"```.*?```", re.S)
_DISPLAY_MATH = re.compile(r"\$\$.+?\$\$", re.S)
_INLINE_MATH = re.compile(r"(?<!\$)\$(?!\$)[^$]+\$")
_INLINE_CODE = re.compile(r"`(?:[^`\n]|\n(?![ \t]*\n))*`")  # may wrap, not across a blank line
_HTML_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_LINE_MARK = re.compile(r"^\s*(?:#+|[-*+]|\d+\.)\s+")


def markdown_prose(markdown: str) -> list[str]:
    """The paragraphs of a markdown cell as plain text: code, math, tags, tables and marks removed.

    Fenced code blocks, math (``$...$``, ``$$...$$``), inline code, HTML tags and table rows are
    dropped; a link keeps its text; heading and list marks and ``*`` emphasis go. The lines of
    a paragraph (separated by a blank line) are joined with one space.
    """
    if not isinstance(markdown, str):
        raise TypeError(f"markdown must be a str, but got {type(markdown).__name__}")
    text = _FENCED_CODE.sub(" ", markdown)
    text = _DISPLAY_MATH.sub(" ", text)
    text = _INLINE_MATH.sub(" ", text)
    text = _INLINE_CODE.sub(" ", text)
    text = _HTML_TAG.sub(" ", text)
    text = _LINK.sub(r"\1", text)
    paragraphs = []
    for block in re.split(r"\n[ \t]*\n", text):
        lines = [line for line in block.splitlines() if not line.lstrip().startswith("|")]
        joined = " ".join(_LINE_MARK.sub("", line).strip() for line in lines)
        joined = re.sub(r"\s+", " ", joined.replace("*", "")).strip()
        if joined:
            paragraphs.append(joined)
    return paragraphs


def build_workbook_text(
    translations_dir: str | os.PathLike[str], source: str = "translations/zh"
) -> dict[str, Any]:
    """The corpus made from a folder of translation files (``NN_name.json``), chapter by chapter.

    Each markdown cell becomes one entry ``{"id", "en", "zh"}``, its prose in both languages
    (paragraphs joined by newlines). Chapters are named by the files' stems, in sorted order.
    `source` is stored as it is, to say where the translations came from (e.g. a commit).
    """
    folder = Path(translations_dir)
    files = sorted(folder.glob("[0-9][0-9]_*.json"))
    if not files:
        raise FileNotFoundError(
            f"no translation files (NN_name.json) in {str(folder)!r}; pass the translations/zh "
            "folder of the repository"
        )
    chapters: dict[str, list[dict[str, str]]] = {}
    for path in files:
        entries = json.loads(path.read_text(encoding="utf-8"))
        cells = []
        for cell_id, entry in entries.items():
            if not entry.get("text", "").strip():
                raise ValueError(
                    f"{path.name}: cell {cell_id} has no Chinese text yet; translate it (or "
                    "build the corpus from a complete translation)"
                )
            cells.append(
                {
                    "id": cell_id,
                    "en": "\n".join(markdown_prose(entry["en"])),
                    "zh": "\n".join(markdown_prose(entry["text"])),
                }
            )
        chapters[path.stem] = cells
    return {"format": WORKBOOK_TEXT_FORMAT, "source": source, "chapters": chapters}


def write_workbook_text(data: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write the corpus as gzipped JSON; the same data always gives the same bytes."""
    raw = (json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True) + "\n").encode("utf-8")
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_workbook_text(path: str | os.PathLike[str] = WORKBOOK_TEXT_FILE) -> dict[str, Any]:
    """The corpus file as a dict: ``format``, ``source`` and ``chapters`` (cells by chapter)."""
    path = Path(path)
    try:
        data = json.loads(gzip.decompress(path.read_bytes()).decode("utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"the workbook corpus {str(path)!r} is missing; reinstall llama_edu, or rebuild it "
            "with python tools/make_workbook_text.py"
        ) from None
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{str(path)!r} is not a readable workbook corpus ({err}); rebuild it with "
            "python tools/make_workbook_text.py"
        ) from err
    if not isinstance(data, dict) or data.get("format") != WORKBOOK_TEXT_FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a workbook corpus in the format {WORKBOOK_TEXT_FORMAT!r}; "
            "rebuild it with python tools/make_workbook_text.py"
        )
    return data


def workbook_chapters(path: str | os.PathLike[str] = WORKBOOK_TEXT_FILE) -> list[str]:
    """The chapters in the corpus, e.g. ``['00_welcome', '01_pytorch_primer', ...]``."""
    return list(read_workbook_text(Path(path))["chapters"])


def workbook_text(
    language: str = "zh",
    chapters: Iterable[int] | None = None,
    path: str | os.PathLike[str] = WORKBOOK_TEXT_FILE,
) -> str:
    """The prose of the chosen chapters (all by default) in `language`, one paragraph a line.

    `language` is ``"en"`` (the English notebooks) or ``"zh"`` (the Chinese edition);
    `chapters` are chapter numbers, e.g. ``range(14)`` for chapters 00 to 13. For the same
    chapters the two languages hold the same cells, so they form a parallel text.
    """
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")
    data = read_workbook_text(Path(path))
    by_number = {int(name[:2]): name for name in data["chapters"]}
    if chapters is None:
        wanted = sorted(by_number)
    else:
        if isinstance(chapters, (str, bytes)):
            raise TypeError("chapters must be chapter numbers such as [14, 15], not a str")
        wanted = list(chapters)
        for number in wanted:
            if isinstance(number, bool) or not isinstance(number, int):
                raise TypeError(f"chapters must be ints such as 14, got {number!r}")
            if number not in by_number:
                raise ValueError(
                    f"there is no chapter {number} in the corpus; it has chapters "
                    f"{min(by_number)} to {max(by_number)}"
                )
        if not wanted:
            raise ValueError("chapters is empty; pass at least one chapter number")
    lines = [
        cell[language]
        for number in wanted
        for cell in data["chapters"][by_number[number]]
        if cell[language]
    ]
    return "\n".join(lines) + "\n"
