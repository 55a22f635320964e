"""Chapters 03-05 as a student gets them: no answer shown, hints one at a time, runs to the end."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from llama_edu import classroom

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHAPTERS = ["03_normalization.ipynb", "04_positions.ipynb", "05_attention.ipynb"]
HEADER = re.compile(
    r"^### Exercise \d+\.\d+ · (\w+) \(difficulty [★☆]{3}, importance [★☆]{3}, "
    r"about \d+ minutes\)",
    re.M,
)


def exercises(nb: nbformat.NotebookNode) -> list[tuple[str, str, str]]:
    """(check name, the prose since the previous code cell, the exercise cell's source)."""
    found, prose = [], ""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            prose += cell.source + "\n"
            continue
        if classroom.has_solution(cell.source):
            found.append((classroom.exercise_checks(nbformat.v4.new_notebook(cells=[cell]))[0],
                          prose, cell.source))  # fmt: skip
        prose = ""
    return found


@pytest.mark.parametrize("name", CHAPTERS)
def test_the_student_version_shows_no_answer(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert classroom.answer_leaks(nb, name) == []


@pytest.mark.parametrize("name", CHAPTERS)
def test_every_exercise_has_the_new_header_and_nested_hints_without_answer_lines(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    found = exercises(nb)
    assert len(found) >= 2
    for check, prose, source in found:
        header = HEADER.search(prose)
        assert header and header.group(1) == check, f"{name}: header of checks.{check}"
        hints = prose[prose.index("<details>") :]
        assert hints.count("<details>") >= 2, f"{name}: checks.{check} needs two hints"
        # nested: every hint opens before the first one closes, so they open one at a time
        assert hints.rfind("<details>") < hints.find("</details>"), f"{name}: {check} not nested"
        pieces = re.findall(r"`([^`]+)`", hints) + hints.split("\n")
        shown = {classroom.normal_line(piece) for piece in pieces}
        for block in classroom.solution_blocks(source):
            for line in classroom.essential_lines(block):
                assert not any(line in piece for piece in shown), (
                    f"{name}: a hint of checks.{check} holds the answer line {line!r}"
                )


@pytest.mark.slow
@pytest.mark.parametrize("name", CHAPTERS)
def test_the_student_version_runs_to_the_end_with_every_exercise_not_implemented(name):
    instructor = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb = classroom.student_notebook(instructor, name)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    errors = [
        f"cell {i}: {out.ename}: {out.evalue}"
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert errors == []
    stubs = [c for c in nb.cells if c.cell_type == "code" and classroom.STUB_MESSAGE in c.source]
    assert len(stubs) == len(exercises(instructor)) >= 2
    for cell in stubs:
        text = "".join(out.get("text", "") for out in cell.outputs)
        for check in re.findall(r"\bchecks\.(\w+)\(", cell.source):
            assert f"checks.{check}: not implemented yet" in text, cell.source[:200]
    everything = "".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    )
    assert "Using your" not in everything  # choose() falls back to the library's version
    if name == "05_attention.ipynb":
        assert "Using the library's attention module: checks.attention_module is " in everything
