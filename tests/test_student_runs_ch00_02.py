"""Chapters 00-02 as a student gets them: no answer shown, hints one at a time, and a clean run.

The student versions (solutions replaced by NotImplementedError stubs) must run top to bottom
in a fresh kernel, with every exercise reporting "not implemented yet" and no error; no code
cell and no hint may show an exercise's answer.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from llama_edu import classroom
from llama_edu.classroom import answer_leaks, has_solution, normal_line, solution_blocks

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHAPTERS = ["00_welcome.ipynb", "01_tokenization.ipynb", "02_embeddings.ipynb"]
HEADER = re.compile(
    r"^### Exercise (\d+)\.(\d+) · (\w+) \(difficulty ([★☆]{3}), importance ([★☆]{3}), "
    r"about (\d+) minutes\)$",
    re.M,
)
CODE_SPAN = re.compile(r"`([^`\n]+)`")


def exercises(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(the markdown since the previous exercise, the exercise's code cell) for each exercise."""
    found, prose = [], ""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            prose += cell.source + "\n"
        elif has_solution(cell.source):
            found.append((prose, cell.source))
            prose = ""
    return found


def hint_texts(prose: str) -> list[str]:
    """The text of each hint: what follows each `<details>` up to the next tag."""
    return re.findall(r"<details>(.*?)(?=<details>|</details>)", prose, re.S)


def answer_lines_in_hints(prose: str, source: str) -> list[str]:
    """Solution lines that a hint shows whole: as a code span, or as a line of its text.

    Lines are compared after `normal_line` (names become `_`, no spaces); trivial lines of fewer
    than 6 normalised characters (`_=[]`) are ignored, and lines of 12 or more also count when
    they are part of a longer hint line.
    """
    solution = [
        normal_line(line)
        for block in solution_blocks(source)
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    shown = []
    for hint in hint_texts(prose):
        pieces = [normal_line(p) for p in CODE_SPAN.findall(hint) + hint.splitlines()]
        for line in solution:
            if len(line) >= 6 and any(
                line == piece or (len(line) >= 12 and line in piece) for piece in pieces
            ):
                shown.append(line)
    return shown


@pytest.fixture(scope="module", params=CHAPTERS)
def chapter(request) -> tuple[str, nbformat.NotebookNode]:
    return request.param, nbformat.read(NOTEBOOKS / request.param, as_version=4)


def test_no_code_cell_of_the_student_version_shows_an_answer(chapter):
    name, nb = chapter
    assert answer_leaks(nb, name) == []


def test_every_exercise_has_the_new_header_and_nested_hints(chapter):
    name, nb = chapter
    found = exercises(nb)
    assert found, name
    for prose, source in found:
        headers = HEADER.findall(prose)
        assert len(headers) == 1, prose[:300]
        number, _, check, *_ = headers[0]
        assert int(number) == int(name[:2])
        assert f"checks.{check}(" in source
        hints = hint_texts(prose)
        assert len(hints) >= 2, check
        # Nested: every hint opens before the first one closes, so they open one at a time.
        hint_part = prose[prose.index("<details>") :]
        assert hint_part.index("</details>") > hint_part.rindex("<details>"), check
        assert hint_part.count("<details>") == hint_part.count("</details>"), check


def test_no_hint_contains_an_answer_line(chapter):
    name, nb = chapter
    for prose, source in exercises(nb):
        assert answer_lines_in_hints(prose, source) == [], (name, HEADER.findall(prose))


def test_the_hint_measure_fires_on_an_answer_line():
    source = (
        "def softmax(x, dim=-1):\n    ### BEGIN SOLUTION\n"
        "    e = torch.exp(x - x.amax(dim=dim, keepdim=True))\n"
        "    return e / e.sum(dim=dim, keepdim=True)\n    ### END SOLUTION\n"
    )
    leaky = (
        "<details><summary>Hint 1</summary>\n\nUse `torch.exp`.\n\n"
        "<details><summary>Hint 2</summary>\n\n"
        "`w = torch.exp(s - s.amax(dim=d, keepdim=True))`, then divide.\n\n</details>\n</details>"
    )
    assert answer_lines_in_hints(leaky, source) == ["_=torch.exp(_-_.amax(_=_,_=True))"]
    honest = leaky.replace("`w = torch.exp(s - s.amax(dim=d, keepdim=True))`", "the maximum")
    assert answer_lines_in_hints(honest, source) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", CHAPTERS)
def test_student_version_runs_top_to_bottom(name):
    """Every exercise says "not implemented yet"; every other cell runs without an error."""
    nb = classroom.student_notebook(nbformat.read(NOTEBOOKS / name, as_version=4), name)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    errors = [
        f"cell {i}: {o.ename}: {o.evalue}"
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert errors == []
    stubs = [c for c in nb.cells if c.cell_type == "code" and classroom.STUB_MESSAGE in c.source]
    assert len(stubs) == len(exercises(nbformat.read(NOTEBOOKS / name, as_version=4)))
    for cell in stubs:
        text = "".join(o.get("text", "") for o in cell.outputs)
        assert "not implemented yet" in text, cell.source[:200]
        assert "passed" not in text, cell.source[:200]
