"""Translated editions of the workbook, kept in step with the English notebooks by hashes.

A translation file (`translations/<lang>/<notebook stem>.json`) maps the id of each markdown
cell of an English notebook to an entry:

    {"en_sha256": "<hash of the English source it translates>",
     "en": "<that English source, for the translator's reference>",
     "text": "<the translation>"}

`build_edition` copies the English notebook and replaces the markdown cells' text only, so code
cells and their outputs are identical in both editions by construction. `stale_cells` names the
markdown cells whose English text has no translation or has changed since it was translated;
the tests fail on them, and `tools/make_edition.py` refuses to write a notebook that has any.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from .runfiles import atomic_write_text

__all__ = [
    "LANGUAGES",
    "StaleCell",
    "build_edition",
    "load_translations",
    "markdown_cells",
    "source_hash",
    "stale_cells",
    "template",
    "write_translations",
]

LANGUAGES = {"zh": "简体中文 (Simplified Chinese)"}
"""Editions besides the English one, by language code."""


@dataclass(frozen=True)
class StaleCell:
    """A markdown cell of the English notebook whose translation is missing or out of date."""

    cell_id: str
    reason: str  # "missing", "changed" or "empty"
    first_line: str

    def __str__(self) -> str:
        return f"cell {self.cell_id} ({self.reason}): {self.first_line!r}"


def source_hash(text: str) -> str:
    """The SHA-256 of a cell's source, in hex: what a translation entry records."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _source(cell: Any) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def markdown_cells(nb: Any) -> list[tuple[str, str]]:
    """(cell id, source) of every markdown cell, in order; every cell must have an id."""
    out = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        cell_id = cell.get("id")
        if not cell_id:
            raise ValueError(f"markdown cell {index} has no id; save the notebook in nbformat "
                             "4.5 or later (nbformat.validator.normalize adds ids)")
        out.append((cell_id, _source(cell)))
    return out


def load_translations(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """A translation file's entries by cell id (an empty dict when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); fix it or restore it from "
                         "git") from exc
    entries_ok = all(isinstance(v, dict) and isinstance(v.get("en_sha256"), str)
                     and isinstance(v.get("text"), str) for v in getattr(data, "values", list)())
    if not isinstance(data, dict) or not entries_ok:
        raise ValueError(f"{path}: every entry must be an object with the strings 'en_sha256' and "
                         "'text' (see llama_edu/translations.py)")
    return data


def stale_cells(nb: Any, translations: dict[str, dict[str, str]]) -> list[StaleCell]:
    """Markdown cells with no translation, an empty one, or one made for other English text."""
    stale = []
    for cell_id, text in markdown_cells(nb):
        first = text.strip().splitlines()[0][:70] if text.strip() else ""
        entry = translations.get(cell_id)
        if entry is None:
            stale.append(StaleCell(cell_id, "missing", first))
        elif entry["en_sha256"] != source_hash(text):
            stale.append(StaleCell(cell_id, "changed", first))
        elif not entry["text"].strip():
            stale.append(StaleCell(cell_id, "empty", first))
    return stale


def template(nb: Any, translations: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """The translation file brought up to date with `nb`, for a translator to fill in.

    Current entries are kept as they are. A new cell gets an entry with empty text. A changed
    cell gets the new English text and hash, empty text, and its old translation under
    "old_text" to revise: it stays stale until the text is filled in. Entries of cells that
    no longer exist are dropped.
    """
    out: dict[str, dict[str, str]] = {}
    for cell_id, text in markdown_cells(nb):
        entry = translations.get(cell_id)
        digest = source_hash(text)
        if entry is not None and entry["en_sha256"] == digest:
            out[cell_id] = dict(entry)
        else:
            out[cell_id] = {"en_sha256": digest, "en": text, "text": ""}
            if entry is not None and entry["text"].strip():
                out[cell_id]["old_text"] = entry["text"]
    return out


def build_edition(nb: Any, translations: dict[str, dict[str, str]]) -> Any:
    """A copy of `nb` whose markdown cells hold their translations; refuses stale ones."""
    stale = stale_cells(nb, translations)
    if stale:
        listed = "\n  ".join(str(s) for s in stale)
        raise ValueError(f"{len(stale)} markdown cell(s) have no current translation:\n  {listed}"
                         "\nTranslate them (tools/make_edition.py --template writes the entries "
                         "to fill in), then build again.")
    out = copy.deepcopy(nb)
    for cell in out["cells"]:
        if cell["cell_type"] == "markdown":
            cell["source"] = translations[cell["id"]]["text"]
    return out


def write_translations(path: str | os.PathLike, entries: dict[str, dict[str, str]]) -> None:
    """Write a translation file atomically, one entry per cell id, readable in a diff."""
    text = json.dumps(entries, ensure_ascii=False, indent=1) + "\n"
    atomic_write_text(Path(path), text)


def read_notebook(path: str | os.PathLike) -> Any:
    """An English notebook as nbformat reads it."""
    return nbformat.read(str(path), as_version=4)
