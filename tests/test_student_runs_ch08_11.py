"""Chapters 08 and 11 as a student meets them: headers, hints that open one at a time and never
hold an answer line, no answer in the student version, and a student version that runs."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from llama_edu import classroom

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHAPTERS = ["08_training.ipynb", "11_myths_and_facts.ipynb"]
HEADER = re.compile(
    r"^### Exercise (\d+)\.(\d+) · (\w+) \(difficulty ([★☆]{3}), importance ([★☆]{3}), "
    r"about (\d+) minutes\)$",
    re.M,
)
CODE = re.compile(r"```[^\n]*\n(.*?)```|`([^`\n]+)`", re.S)


def exercises(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(the prose since the previous exercise, the exercise cell's source), in order."""
    found, prose = [], ""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            prose += cell.source + "\n"
        elif classroom.has_solution(cell.source):
            found.append((prose, cell.source))
            prose = ""
    return found


def hint_code_lines(hints: str) -> list[str]:
    """Every line of code in the hints (code spans and fenced blocks), normalised."""
    lines = []
    for block, span in CODE.findall(hints):
        for line in (block or span).splitlines():
            if line.strip():
                lines.append(classroom.normal_line(line))
    return lines


def hint_problems(prose: str, source: str) -> list[str]:
    """What is wrong with one exercise's header and hints (empty when all is well)."""
    problems = []
    headers = HEADER.findall(prose)
    if len(headers) != 1:
        return [f"expected one header in the new format, found {len(headers)}"]
    name = headers[0][2]
    if f"checks.{name}(" not in source:
        problems.append(f"the header names {name}, but the cell does not call checks.{name}")
    hints = prose[prose.find("<details>") :]
    opened = [m.start() for m in re.finditer("<details>", hints)]
    closed = [m.start() for m in re.finditer("</details>", hints)]
    if len(opened) < 2 or len(opened) != len(closed):
        problems.append(f"{len(opened)} hints opened and {len(closed)} closed; at least two")
    elif opened[-1] > closed[0]:
        problems.append("the hints are not nested: a hint closes before the next one opens")
    essential = [
        line for block in classroom.solution_blocks(source)
        for line in classroom.essential_lines(block)
    ]  # fmt: skip
    for line in hint_code_lines(hints):
        for answer in essential:
            ratio = difflib.SequenceMatcher(None, line, answer).ratio()
            if ratio >= classroom.LINE_SIMILARITY:
                problems.append(f"a hint holds the answer line {answer!r} (as {line!r})")
    return problems


@pytest.mark.parametrize("name", CHAPTERS)
def test_headers_and_nested_hints_without_answer_lines(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    found = exercises(nb)
    assert found, name
    problems = [
        f"{name}, exercise {i}: {problem}"
        for i, (prose, source) in enumerate(found, start=1)
        for problem in hint_problems(prose, source)
    ]
    assert problems == []
    numbers = [HEADER.search(prose).group(2) for prose, _ in found]
    assert numbers == [str(i) for i in range(1, len(found) + 1)], "numbered in order"


def test_the_hint_rules_can_fail():
    source = (
        "def f(x):\n    ### BEGIN SOLUTION\n    return torch.softmax(x, dim=-1)\n"
        "    ### END SOLUTION\nchecks.softmax(f)"
    )
    good = (
        "### Exercise 8.9 · softmax (difficulty ★☆☆, importance ★★☆, about 5 minutes)\n"
        "<details><summary>Hint 1</summary>\nUse a softmax.\n"
        "<details><summary>Hint 2</summary>\nOver the last dimension.\n</details>\n</details>"
    )
    assert hint_problems(good, source) == []
    leaky = good.replace("Over the last dimension.", "`return torch.softmax(y, dim=-1)`")
    assert "answer line" in hint_problems(leaky, source)[0]
    flat = good.replace("Use a softmax.\n", "Use a softmax.\n</details>\n").replace(
        "</details>\n</details>", "</details>"
    )
    assert "not nested" in hint_problems(flat, source)[0]
    old = good.replace("importance ★★☆, ", "")
    assert "new format" in hint_problems(old, source)[0]


@pytest.mark.parametrize("name", CHAPTERS)
def test_the_student_version_shows_no_answer(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert classroom.answer_leaks(nb, name) == []


def run_student(name: str) -> nbformat.NotebookNode:
    student = classroom.student_notebook(nbformat.read(NOTEBOOKS / name, as_version=4), name)
    NotebookClient(
        student,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    ).execute()
    return student


def assert_runs_as_a_student(student: nbformat.NotebookNode, name: str) -> None:
    errors = [
        f"cell {i}: {o.ename}: {o.evalue}"
        for i, c in enumerate(student.cells)
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert errors == [], name
    text = {
        i: "".join(o.get("text", "") for o in c.outputs)
        for i, c in enumerate(student.cells)
        if c.cell_type == "code"
    }
    stubs = [i for i, c in enumerate(student.cells) if classroom.STUB_MESSAGE in c.source]
    assert stubs
    for i in stubs:
        assert "not implemented yet" in text[i], (name, i)
    chosen = [t for t in text.values() if "checks." in t and "Using " in t]
    assert chosen and all("Using the library's" in t for t in chosen), chosen


@pytest.mark.slow
def test_the_student_version_of_11_runs_top_to_bottom():
    name = "11_myths_and_facts.ipynb"
    assert_runs_as_a_student(run_student(name), name)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("LLAMA_EDU_STUDENT_08"),
    reason="trains for about 3 minutes; set LLAMA_EDU_STUDENT_08=1 to run it",
)
def test_the_student_version_of_08_runs_top_to_bottom():
    name = "08_training.ipynb"
    assert_runs_as_a_student(run_student(name), name)
