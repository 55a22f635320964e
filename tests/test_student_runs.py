"""Every generated student version runs top to bottom in a fresh kernel (issue 15).

Each exercise says "not implemented yet", no cell raises, and wherever the notebook goes on with
an exercise's result, `checks.choose` takes the library's version and says so.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from llama_edu import classroom

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def text_of(cell: nbformat.NotebookNode) -> str:
    return "".join(output.get("text", "") for output in cell.outputs)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_student_version_runs_with_every_exercise_not_implemented(path):
    instructor = nbformat.read(path, as_version=4)
    student = classroom.student_notebook(instructor, name=path.name)
    NotebookClient(
        student,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    ).execute()
    errors = [
        f"cell {index}: {output.ename}: {output.evalue}"
        for index, cell in enumerate(student.cells)
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert errors == []
    stubs = [
        c for c in student.cells if c.cell_type == "code" and classroom.STUB_MESSAGE in c.source
    ]
    exercises = [
        c for c in instructor.cells if c.cell_type == "code" and classroom.has_solution(c.source)
    ]
    assert len(stubs) == len(exercises) > 0
    for cell in stubs:
        assert "not implemented yet" in text_of(cell), cell.source[:200]
        assert "passed" not in text_of(cell), cell.source[:200]
    chosen = "".join(
        text_of(cell)
        for cell in student.cells
        if cell.cell_type == "code" and "checks.choose(" in cell.source
    )
    assert "Using your" not in chosen
