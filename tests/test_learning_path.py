"""The learning path: no chapter uses a library function before the chapter that teaches it.

Each name a notebook imports from `llama_edu` has a home chapter, the chapter that explains it.
A notebook may import names whose home is its own chapter or an earlier one; tool modules
(checks, plots, the device helper, the block figure) may be used anywhere.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))

TOOLS = {"checks", "viz", "device", "diagram", "classroom", "messages"}
"""Modules that teach nothing by themselves: usable in every chapter."""

MODULE_HOME = {
    "tokenizer": 2,
    "bpe": 2,
    "data": 2,  # corpora; the baselines' entropy figures are at home in 09 (below)
    "tinytales": 2,  # the story corpus; its entropy floor is computed in 09
    "attention": 4,
    "rope": 5,
    "ffn": 6,
    "norm": 7,
    "model": 8,
    "interop": 8,
    "train": 9,
    "loss_report": 9,  # is my loss normal? the floor, the gap closed and the reference band
    "generate": 10,
    "interpretability": 11,
    "ablation": 12,
    "metrics": 13,
    "glossary": 13,
    "tasks": 14,
    "posttrain": 14,
    "lora": 14,
    "preference": 14,
    "finetune": 14,
    "budget": 15,
    "quantize": 15,
}
NAME_HOME = {
    ("model", "ModelArgs"): 3,  # the sizes of real models, read from a dataclass
    ("model", "PRESETS"): 3,
    # 03 and 07 show the share of the embeddings / norms in real models with the library's
    # counter; chapter 08 derives the count (exercise 8.3).
    ("model", "count_params"): 3,
    ("model", "LLAMA31_SCALING"): 5,
    ("attention", "Attention"): 5,  # Llama's attention module applies RoPE
    ("data", "unigram_bits_per_char"): 9,
    ("data", "bigram_bits_per_char"): 9,
    # Chapter 09 shows samples before and after training with the library's `generate`, and links
    # to chapter 10, which explains sampling; nothing in 09 depends on how it works.
    ("generate", "generate"): 9,
}


def home(module: str, name: str) -> int | None:
    """The chapter that teaches `llama_edu.<module>.<name>`, or None for a tool."""
    if module in TOOLS:
        return None
    if (module, name) in NAME_HOME:
        return NAME_HOME[(module, name)]
    if module not in MODULE_HOME:
        raise KeyError(
            f"llama_edu.{module} has no home chapter in tests/test_learning_path.py: add it to "
            "MODULE_HOME (or to TOOLS when it teaches nothing by itself)."
        )
    return MODULE_HOME[module]


def imported_names(source: str) -> list[tuple[str, str]]:
    """(module, name) for every `from llama_edu.<module> import <name>` in a code cell."""
    python = "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )
    found = []
    for node in ast.walk(ast.parse(python)):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] == "llama_edu" and len(parts) > 1:
                found += [(parts[1], alias.name) for alias in node.names]
            elif node.module == "llama_edu":
                found += [(alias.name, "*") for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [
                (alias.name.split(".")[1], "*")
                for alias in node.names
                if alias.name.startswith("llama_edu.")
            ]
    return found


def too_early(nb: nbformat.NotebookNode, chapter: int) -> list[str]:
    """The imports of a notebook whose home chapter comes after it."""
    problems = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for module, name in imported_names(cell.source):
            taught = home(module, name)
            if taught is not None and taught > chapter:
                problems.append(
                    f"llama_edu.{module}.{name} is used in chapter {chapter:02d} but taught in "
                    f"chapter {taught:02d}"
                )
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_chapter_imports_what_a_later_chapter_teaches(path):
    nb = nbformat.read(path, as_version=4)
    assert too_early(nb, int(path.name[:2])) == []


def test_every_home_is_a_chapter_that_exists():
    chapters = {int(p.name[:2]) for p in NOTEBOOKS}
    assert set(MODULE_HOME.values()) | set(NAME_HOME.values()) <= chapters


def test_a_later_import_is_reported():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%matplotlib inline\nfrom llama_edu.rope import apply_rope"),
        nbformat.v4.new_code_cell("from llama_edu import checks, viz\nimport llama_edu.train"),
    ]
    assert too_early(nb, 4) == [
        "llama_edu.rope.apply_rope is used in chapter 04 but taught in chapter 05",
        "llama_edu.train.* is used in chapter 04 but taught in chapter 09",
    ]
    assert too_early(nb, 9) == []


def test_an_unknown_module_must_be_given_a_home():
    with pytest.raises(KeyError, match="MODULE_HOME"):
        home("speculation", "draft")


def test_the_path_has_no_gaps():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(len(numbers))), numbers
    assert re.match(r"01_pytorch", NOTEBOOKS[1].name)


def minutes(text: str) -> float:
    """The minutes of the first 'N minutes'/'N hours'/'N min'/'N h' in `text`, plus any 'plus N'."""
    found = re.search(r"(\d+(?:\.\d+)?)\s*(minutes?|min|hours?|h)\b", text)
    if found is None:
        raise ValueError(f"no time in {text!r}")
    total = float(found[1]) * (60 if found[2].startswith("h") else 1)
    extra = re.search(r"plus (\d+) minutes", text)
    return total + (float(extra[1]) if extra else 0.0)


def test_minutes_reads_both_styles():
    assert minutes("About 2.5 hours: 60 minutes of reading") == 150
    assert minutes("About 45 minutes, plus 25 minutes for the exercises.") == 70
    assert minutes("2 h (60 min for the whole model)") == 120
    with pytest.raises(ValueError):
        minutes("a while")


def test_the_teaching_guide_gives_each_notebook_its_own_time():
    guide = (NOTEBOOK_DIR.parent / "docs" / "teaching.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (\d\d_\w+) \| [^|]+ \| ([^|]+) \|", guide, re.M))
    for path in NOTEBOOKS:
        intro = nbformat.read(path, as_version=4).cells[1].source
        stated = re.search(r"## Time\s*\n+(.+)", intro)
        assert stated, f"{path.name}: no '## Time' section in its second cell"
        assert path.stem in rows, f"docs/teaching.md has no row for {path.stem}"
        assert minutes(rows[path.stem]) == minutes(stated[1]), (
            f"{path.stem}: docs/teaching.md says {rows[path.stem].strip()!r}, the notebook says "
            f"{stated[1]!r}; make them agree."
        )
