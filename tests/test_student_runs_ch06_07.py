"""Chapters 06 and 07 as a student gets them: no answer shown, every exercise still to do.

The generated student versions run top to bottom in a fresh kernel, each exercise says "not
implemented yet", the notebook goes on with the library's code (checks.choose says so), and no
hint holds a line of its exercise's solution.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from llama_edu import classroom
from llama_edu.classroom import answer_leaks, normal_line, solution_blocks, student_notebook

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["06_feed_forward.ipynb", "07_llama_model.ipynb"]
HEADER = re.compile(
    r"^### Exercise (\d+)\.(\d+) · (\w+) \(difficulty ([★☆]{3}), importance ([★☆]{3}), "
    r"about (\d+) minutes\)",
    re.M,
)
CHECK_CALL = re.compile(r"\bchecks\.([a-z_]+)\(")


def exercises(nb: nbformat.NotebookNode) -> list[tuple[str, str, str]]:
    """(check name, the markdown since the previous exercise, the solution cell) per exercise."""
    found, prose = [], ""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            prose += cell.source + "\n"
        elif classroom.has_solution(cell.source):
            found.append((CHECK_CALL.findall(cell.source)[-1], prose, cell.source))
            prose = ""
    return found


def hint_lines(prose: str) -> list[str]:
    """Every line and every code span of the hints (the text inside <details>)."""
    hints = prose[prose.index("<details>") :] if "<details>" in prose else ""
    spans = re.findall(r"`([^`\n]+)`", hints)
    return [normal_line(text) for text in hints.splitlines() + spans if text.strip()]


@pytest.fixture(scope="module", params=NAMES)
def instructor(request) -> tuple[str, nbformat.NotebookNode]:
    return request.param, nbformat.read(NOTEBOOKS / request.param, as_version=4)


def test_no_student_cell_shows_an_answer(instructor):
    name, nb = instructor
    assert answer_leaks(nb, name) == []


def test_every_exercise_has_a_rated_header_and_nested_hints(instructor):
    name, nb = instructor
    found = exercises(nb)
    assert len(found) >= 2, name
    for check_name, prose, _ in found:
        headers = HEADER.findall(prose)
        assert len(headers) == 1, f"{name}: no new-format header before checks.{check_name}"
        chapter, _, header_name, *_ = headers[0]
        assert (int(chapter), header_name) == (int(name[:2]), check_name)
        hints = prose[prose.index("<details>") :]
        # nested: every hint opens before the previous one closes
        assert hints.count("<details>") >= 2
        assert re.search(r"<details>(?:(?!</details>).)*<details>", hints, re.S), check_name


def test_no_hint_holds_a_line_of_the_solution(instructor):
    name, nb = instructor
    for check_name, prose, source in exercises(nb):
        hints = hint_lines(prose)
        for block in solution_blocks(source):
            for line in block.splitlines():
                solution = normal_line(line)
                if len(solution) < 6:  # `return _`, `_ = _`: nothing to give away
                    continue
                shown = [h for h in hints if solution in h]
                assert not shown, f"{name}: a hint of checks.{check_name} holds {line.strip()!r}"


def test_the_measure_fires_on_a_hint_that_gives_the_line():
    prose = "<details><summary>Hint 1</summary>\n\nWrite `h = x + f(norm(x))`.\n</details>"
    assert any(normal_line("out = inp + sub(n(inp))") in h for h in hint_lines(prose))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_the_student_version_runs_with_every_exercise_not_implemented(name):
    nb = student_notebook(nbformat.read(NOTEBOOKS / name, as_version=4), name)
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
    cells = [c for c in nb.cells if c.cell_type == "code"]
    stubs = [c for c in cells if classroom.STUB_MESSAGE in c.source]
    assert len(stubs) == len(exercises(nbformat.read(NOTEBOOKS / name, as_version=4)))
    for cell in stubs:
        text = "".join(o.get("text", "") for o in cell.outputs)
        assert "not implemented yet" in text, cell.source[:200]
    said = "".join(
        o.get("text", "") for c in cells if "checks.choose(" in c.source for o in c.outputs
    )
    assert "Using the library's" in said and "Using your" not in said
