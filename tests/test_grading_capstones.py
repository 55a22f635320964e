"""`llama-edu grade` on the capstones of chapters 05, 08, 09 and 10 (01 has its own file): the
instructor's solution passes, a typical mistake fails with its name, a stub is not attempted.

Each submission holds the chapter's import cell and the capstone cell, taken from the instructor
notebook (so the test follows the notebook), with one line changed for the mistake.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from llama_edu import classroom
from llama_edu.classroom import FAILED, NOT_ATTEMPTED, PASSED

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"

# chapter notebook, check, (a line of the solution, the same line with a typical mistake), and a
# fragment of the message that names that mistake.
CAPSTONES = [
    (
        "05_positions.ipynb",
        "attention_module",
        (
            "q, k = rotate_pairs(q, cos, sin), rotate_pairs(k, cos, sin)",
            "q, k = rotate_pairs(q, cos, sin), k",
        ),
        "not to the keys",
    ),
    (
        "08_llama_model.ipynb",
        "llama_model",
        ("return self.output(self.norm(h)).float()", "return self.output(h).float()"),
        "the final norm is missing",
    ),
    (
        "09_training.ipynb",
        "train_step",
        ("optimizer.zero_grad(set_to_none=True)", "pass"),
        "the gradients are never zeroed",
    ),
    (
        "10_generation.ipynb",
        "generate_loop",
        ("if next_id in stop_ids:", "if False:"),
        "went on after the stop id",
    ),
]


def capstone_cells(name: str, check: str) -> tuple[str, str]:
    """The chapter's first code cell (its imports) and the cell that calls checks.<check>."""
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    code = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    exercise = [source for source in code if f"checks.{check}(" in source]
    assert len(exercise) == 1, f"{name}: expected one cell calling checks.{check}"
    return code[0], exercise[0]


def write(path: Path, *sources: str) -> Path:
    nb = new_notebook(cells=[new_markdown_cell("# A submission")])
    nb.cells += [new_code_cell(source) for source in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_capstones_pass_fail_with_the_named_mistake_or_are_not_attempted(tmp_path):
    submissions = {"good": [], "wrong": [], "stub": []}
    for name, check, (right, wrong), _ in CAPSTONES:
        imports, exercise = capstone_cells(name, check)
        assert exercise.count(right) == 1, f"{name}: the line {right!r} is not in the solution"
        stub = classroom.strip_solutions(exercise)
        stem = name.removesuffix(".ipynb")
        submissions["good"].append(write(tmp_path / f"good-{stem}.ipynb", imports, exercise))
        submissions["wrong"].append(
            write(tmp_path / f"wrong-{stem}.ipynb", imports, exercise.replace(right, wrong))
        )
        submissions["stub"].append(write(tmp_path / f"stub-{stem}.ipynb", imports, stub))

    for index, (_, check, _, named) in enumerate(CAPSTONES):
        grades = {
            kind: {
                e.check: e
                for e in classroom.grade_notebook(paths[index], 300, expected=[check]).exercises
            }[check]
            for kind, paths in submissions.items()
        }
        assert grades["good"].status == PASSED, grades["good"].message
        assert grades["wrong"].status == FAILED, grades["wrong"].message
        assert named in grades["wrong"].message
        assert grades["stub"].status == NOT_ATTEMPTED
