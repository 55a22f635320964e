"""Exercises as a student meets them: ratings, hints that open one at a time and never hold an
answer line, and student versions that never show an answer (issue 15)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from llama_edu.classroom import (
    answer_leaks,
    essential_lines,
    has_solution,
    normal_line,
    solution_blocks,
)

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
HEADER = re.compile(
    r"^### Exercise (\d+)\.(\d+) · (\w+) \(difficulty ([★☆]{3}), importance ([★☆]{3}), "
    r"about (\d+) minutes\)",
    re.M,
)
CODE_SPAN = re.compile(r"```[a-z]*\n(.*?)```|`([^`\n]+)`", re.S)
MIN_EXERCISES, MIN_THREE_STAR, MIN_TWO_STAR = 34, 5, 12


def exercises(nb: nbformat.NotebookNode) -> list[tuple[re.Match, str, str]]:
    """(header match, the prose between header and exercise cell, the exercise cell's source)."""
    found, prose = [], ""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            prose = cell.source + "\n" if HEADER.search(cell.source) else prose + cell.source + "\n"
        elif has_solution(cell.source) and HEADER.search(prose):
            found.append((HEADER.search(prose), prose, cell.source))
            prose = ""
    return found


def all_exercises() -> list[tuple[str, re.Match, str, str]]:
    return [
        (path.name, *exercise)
        for path in NOTEBOOKS
        for exercise in exercises(nbformat.read(path, as_version=4))
    ]


def hint_code_lines(prose: str) -> list[str]:
    """Every line the hints show (code spans, fenced blocks and prose lines), normalised."""
    hints = prose[prose.find("<details>") :] if "<details>" in prose else ""
    pieces = hints.split("\n")
    for block, span in CODE_SPAN.findall(hints):
        pieces += (block or span).split("\n")
    return [normal_line(piece) for piece in pieces if piece.strip()]


def answer_lines_in_hints(prose: str, source: str) -> list[str]:
    """The essential solution lines that a hint shows whole (alone or inside a longer line)."""
    pieces = hint_code_lines(prose)
    return [
        line
        for block in solution_blocks(source)
        for line in essential_lines(block)
        if any(line in piece for piece in pieces)
    ]


def stars(rating: str) -> int:
    return rating.count("★")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_student_version_shows_an_answer(path):
    assert answer_leaks(nbformat.read(path, as_version=4), path.name) == []


def test_every_exercise_is_rated_and_the_spread_is_kept():
    found = all_exercises()
    solution_cells = sum(
        has_solution(cell.source)
        for path in NOTEBOOKS
        for cell in nbformat.read(path, as_version=4).cells
        if cell.cell_type == "code"
    )
    assert len(found) == solution_cells, "an exercise cell without a rated header above it"
    difficulty = [stars(match[4]) for _, match, _, _ in found]
    assert len(found) >= MIN_EXERCISES, f"{len(found)} exercises"
    assert difficulty.count(3) >= MIN_THREE_STAR, f"{difficulty.count(3)} three-star exercises"
    assert difficulty.count(2) >= MIN_TWO_STAR, f"{difficulty.count(2)} two-star exercises"
    assert all(stars(match[5]) >= 1 for _, match, _, _ in found)


@pytest.mark.parametrize(
    "name, match, prose, source", all_exercises(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_hints_open_one_at_a_time_and_never_hold_an_answer_line(name, match, prose, source):
    where = f"{name}, exercise {match[1]}.{match[2]} ({match[3]})"
    tags = re.findall(r"</?details>", prose)
    assert tags.count("<details>") >= 2, f"{where}: fewer than two hints"
    first_close = tags.index("</details>")
    assert "<details>" not in tags[first_close:], f"{where}: hints are not nested"
    assert tags.count("<details>") == tags.count("</details>"), f"{where}: unbalanced <details>"
    assert answer_lines_in_hints(prose, source) == [], f"{where}: a hint shows an answer line"


SOFTMAX = """def my_softmax(x, dim=-1):
    ### BEGIN SOLUTION
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)
    ### END SOLUTION"""


@pytest.mark.parametrize(
    "hint",
    [
        "Subtract the maximum: `w = torch.exp(s - s.amax(dim=d, keepdim=True))`.",
        "```python\nz = torch.exp(v - v.amax(dim=k, keepdim=True))  # stable\n```",
        "Write e = torch.exp(x - x.amax(dim=dim, keepdim=True)) and divide.",
    ],
)
def test_the_hint_rule_fires_on_an_answer_line(hint):
    prose = f"<details><summary>Hint 1</summary>\n\n{hint}\n\n</details>"
    assert answer_lines_in_hints(prose, SOFTMAX) == ["_=torch.exp(_-_.amax(_=_,_=True))"]
    honest = "<details><summary>Hint 1</summary>\n\nSubtract `x.amax(dim=dim, keepdim=True)`.\n"
    assert answer_lines_in_hints(honest, SOFTMAX) == []


def test_the_teaching_guide_lists_every_exercise_as_the_notebooks_rate_it():
    guide = (NOTEBOOK_DIR.parent / "docs" / "teaching.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| \d+\.\d+ \| `\w+` \| [★☆]{3} \| [★☆]{3} \| \d+ \|$", guide, re.M))
    wanted = {
        f"| {m[1]}.{m[2]} | `{m[3]}` | {m[4]} | {m[5]} | {m[6]} |" for _, m, _, _ in all_exercises()
    }
    assert rows == wanted, (
        f"docs/teaching.md differs: missing {wanted - rows}, extra {rows - wanted}"
    )
