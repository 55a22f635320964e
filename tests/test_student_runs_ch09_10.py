"""Chapters 09 and 10 as a student gets them: no answer shown, hints one at a time, runs clean."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import nbformat
import pytest

from llama_edu import classroom

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHAPTERS = ["09_generation.ipynb", "10_inside_the_model.ipynb"]
HEADER = re.compile(
    r"^### Exercise (\d+)\.(\d+) · (\w+) \(difficulty ([★☆]{3}), importance ([★☆]{3}), "
    r"about (\d+) minutes\)",
    re.M,
)
CODE_SPAN = re.compile(r"`([^`\n]+)`")


def exercises(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(the markdown since the previous exercise, the exercise's code) for every exercise."""
    found, prose = [], ""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            prose += cell.source + "\n"
        elif classroom.has_solution(cell.source):
            found.append((prose, cell.source))
            prose = ""
    return found


def hints(prose: str) -> str:
    """The text inside the <details> blocks of an exercise's markdown."""
    start = prose.find("<details>")
    return prose[start:] if start >= 0 else ""


def answer_lines_in_hints(prose: str, solution: str) -> list[str]:
    """The solution lines that a code span of the hints shows: any line exactly (short ones
    like `return output(norm(hidden))` too), an essential line also nearly."""
    spans = [classroom.normal_line(s) for s in CODE_SPAN.findall(hints(prose))]
    block = "\n".join(classroom.solution_blocks(solution))
    essential = classroom.essential_lines(block)
    shown = []
    for line in dict.fromkeys(classroom._code_lines(block)):
        for span in spans:
            near = difflib.SequenceMatcher(None, line, span).ratio() >= classroom.LINE_SIMILARITY
            if span == line or (line in essential and near):
                shown.append(f"{line!r} ~ {span!r}")
    return shown


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


@pytest.mark.parametrize("name", CHAPTERS)
def test_no_code_cell_of_the_student_version_shows_an_answer(name):
    assert classroom.answer_leaks(read(name), name) == []


@pytest.mark.parametrize("name", CHAPTERS)
def test_every_exercise_has_the_new_header_and_nested_hints_without_answer_lines(name):
    found = exercises(read(name))
    assert found, name
    for number, (prose, solution) in enumerate(found, start=1):
        header = HEADER.search(prose)
        assert header, f"{name}: exercise {number} has no header with importance"
        assert (int(header[1]), int(header[2])) == (int(name[:2]), number)
        assert f"checks.{header[3]}(" in solution
        text = hints(prose)
        assert text.count("<details>") >= 2, f"{name} {header[3]}: fewer than two hints"
        # nested: every hint after the first opens before the previous one closes
        opened = [m.start() for m in re.finditer("<details>", text)]
        first_close = text.find("</details>")
        assert all(position < first_close for position in opened), f"{header[3]}: not nested"
        assert answer_lines_in_hints(prose, solution) == [], header[3]


def test_the_hint_measure_fires_on_an_answer_line():
    solution = "def f(x):\n    ### BEGIN SOLUTION\n    centred = x - x.mean(dim=0)\n" \
        "    return centred @ centred.T\n    ### END SOLUTION\n"  # fmt: skip
    prose = "<details><summary>Hint 1</summary>\n\nUse `c = pts - pts.mean(dim=0)`.\n</details>"
    assert answer_lines_in_hints(prose, solution) != []
    assert answer_lines_in_hints(prose.replace("c = pts - pts.mean(dim=0)", "mean"), solution) == []
    short = "def f(h, n, o):\n    ### BEGIN SOLUTION\n    return o(n(h))\n    ### END SOLUTION\n"
    assert answer_lines_in_hints("<details>`return output(norm(hidden))`</details>", short) != []


@pytest.mark.slow
@pytest.mark.parametrize("name", CHAPTERS)
def test_the_student_version_runs_with_every_exercise_not_implemented(name):
    from nbclient import NotebookClient

    student = classroom.student_notebook(read(name), name=name)
    NotebookClient(
        student,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    ).execute()
    errors = [
        f"cell {i}: {o.ename}: {o.evalue}"
        for i, cell in enumerate(student.cells)
        if cell.cell_type == "code"
        for o in cell.outputs
        if o.output_type == "error"
    ]
    assert errors == []
    code = [c for c in student.cells if c.cell_type == "code"]
    stubs = [c for c in code if classroom.STUB_MESSAGE in c.source]
    assert len(stubs) == len(exercises(read(name)))
    for cell in stubs:
        text = "".join(o.get("text", "") for o in cell.outputs)
        assert "not implemented yet" in text, cell.source[:200]
    chosen = "".join(
        o.get("text", "")
        for c in student.cells
        if c.cell_type == "code" and "checks.choose(" in c.source
        for o in c.outputs
    )
    assert "Using the library's" in chosen and "Using your" not in chosen
