"""Notebook hygiene rules from CONTRIBUTING.md, checked without starting a kernel."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from llama_edu import checks
from llama_edu.classroom import has_solution

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
MAX_BYTES = 3_000_000
MIN_COMPARED_FRACTION = 0.70
FIGURE_REPR = re.compile(r"^<(?:Figure|matplotlib\.figure\.Figure)\b[^>\n]*>$")
LITERAL_TRUE = re.compile(r"""\bprint\(\s*f?(["'])[^"'\n]*\bTrue\1\s*\)""")
NAME = re.compile(r"^\d\d_[a-z0-9_]+\.ipynb$")
REQUIRED_HEADINGS = [
    "Learning objectives",
    "Prerequisites",
    "Time",
    "Exercise",
    "Summary",
    "Common misconceptions",
    "Further reading",
]
ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:work|root|home|tmp|Users)/[^\s\"'<>]+")
CHECK_CALL = re.compile(r"\bchecks\.([a-z_][a-z0-9_]*)\(")
IGNORE = "NBVAL_IGNORE_OUTPUT"
EXERCISE_HEADER = re.compile(
    r"^### Exercise (\d+)\.(\d+) · \w+ "
    r"\(difficulty [★☆]{3}, importance [★☆]{3}, about \d+ minutes\)",
    re.M,
)
MIN_EXERCISES_PER_CHAPTER, MIN_EXERCISES = 2, 25


def has_text_output(cell: nbformat.NotebookNode) -> bool:
    """True when nbval really compares something: stdout, or a text result that is not a figure.

    nbval does not compare images, so a cell whose only output is a figure (image/png plus the
    `<Figure size ... with N Axes>` text) checks nothing, compared or not. stderr does not count
    (compared cells must not have any), nor do stored errors.
    """
    for output in cell.outputs:
        if output.output_type == "stream":
            if output.name == "stdout" and output.text.strip():
                return True
        elif output.output_type in ("execute_result", "display_data"):
            text = output.get("data", {}).get("text/plain", "")
            text = "".join(text) if isinstance(text, list) else text
            if text.strip() and not FIGURE_REPR.match(text.strip()):
                return True
    return False


def problems(nb: nbformat.NotebookNode, name: str, size: int) -> list[str]:
    """Every hygiene rule this notebook breaks, one line each."""
    found: list[str] = []
    if not NAME.match(name):
        found.append(f"{name}: not named NN_topic.ipynb")
    if size > MAX_BYTES:
        found.append(f"{name}: {size:,} bytes, over the {MAX_BYTES:,} byte budget")
    if nb.metadata.get("kernelspec", {}).get("name") != "python3":
        found.append(f"{name}: kernelspec is not python3")

    headings = [
        line.lstrip("#").strip()
        for cell in nb.cells if cell.cell_type == "markdown"
        for line in cell.source.splitlines() if line.startswith("#")
    ]
    if not headings or not re.match(rf"^{name[:2]}\b", headings[0]):
        found.append(f"{name}: the first heading should start with the chapter number {name[:2]}")
    for required in REQUIRED_HEADINGS:
        if not any(h.startswith(required) for h in headings):
            found.append(f"{name}: no heading starting with {required!r}")

    last = 0
    compared = with_text = 0
    prose_since_exercise = ""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            prose_since_exercise += cell.source + "\n"
        if cell.cell_type != "code":
            continue
        where = f"{name} cell {index}"
        source = cell.source.strip()
        if not source:
            found.append(f"{where}: empty code cell")
            continue
        if cell.execution_count is None:
            found.append(f"{where}: never executed")
        else:
            if cell.execution_count != last + 1:
                found.append(f"{where}: execution count {cell.execution_count} after {last}")
            last = cell.execution_count
        if source.splitlines()[-1].rstrip().endswith(";"):
            found.append(f"{where}: ends with ';' (nbval still compares the output)")
        ignored = IGNORE in source
        if has_text_output(cell):
            with_text += 1
            compared += not ignored
        if LITERAL_TRUE.search(cell.source):
            found.append(
                f"{where}: prints a literal string ending in 'True' (after an assert it carries "
                "no information): print the computed values instead"
            )
        for output in cell.outputs:
            if output.output_type == "error":
                found.append(f"{where}: stored error {output.get('ename')}")
            if output.output_type == "stream" and output.name == "stderr" and not ignored:
                found.append(f"{where}: stderr output in a compared cell")
            text = json.dumps(output.get("text", "")) + json.dumps(output.get("data", {}))
            if ABSOLUTE_PATH.search(text):
                found.append(f"{where}: absolute machine path {ABSOLUTE_PATH.search(text)[0]}")
        if has_solution(cell.source):
            header = EXERCISE_HEADER.search(prose_since_exercise)
            if not header:
                found.append(
                    f"{where}: no '### Exercise N.k · name (difficulty ★☆☆, importance ★★☆, "
                    "about M minutes)' header before this exercise"
                )
            elif name[:2].isdigit() and int(header[1]) != int(name[:2]):
                found.append(f"{where}: exercise {header[1]}.{header[2]} in chapter {name[:2]}")
            if prose_since_exercise.count("<details>") < 2:
                found.append(f"{where}: fewer than two <details> hints before this exercise")
            prose_since_exercise = ""
            called = CHECK_CALL.findall(cell.source)
            if not called:
                found.append(f"{where}: exercise cell calls no checks.<name>(...)")
            for check_name in called:
                if check_name not in checks.available():
                    found.append(f"{where}: checks.{check_name} does not exist")
    if with_text and compared / with_text < MIN_COMPARED_FRACTION:
        found.append(
            f"{name}: only {compared}/{with_text} cells with text output are compared by nbval "
            f"(at least {MIN_COMPARED_FRACTION:.0%} must be; figures alone do not count)"
        )
    return found


def test_there_are_notebooks():
    assert any(p.name == "00_welcome.ipynb" for p in NOTEBOOKS)


def test_every_chapter_has_enough_exercises():
    counts = {}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        counts[path.name[:2]] = sum(
            c.cell_type == "code" and has_solution(c.source) for c in nb.cells
        )
    for chapter in [f"{n:02d}" for n in range(1, 12)]:
        assert counts.get(chapter, 0) >= MIN_EXERCISES_PER_CHAPTER, (chapter, counts)
    assert sum(counts[f"{n:02d}"] for n in range(1, 12)) >= MIN_EXERCISES, counts


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_hygiene(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert problems(nb, path.name, path.stat().st_size) == []


def _good_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    headings = "\n".join(f"## {h}" for h in REQUIRED_HEADINGS)
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# 42 · Example\n{headings}"),
        nbformat.v4.new_code_cell("print(1)"),
        nbformat.v4.new_markdown_cell(
            "### Exercise 42.1 · softmax (difficulty ★☆☆, importance ★★★, about 5 minutes)\n\n"
            "<details><summary>Hint 1</summary>a</details>\n"
            "<details><summary>Hint 2</summary>b</details>"
        ),
        nbformat.v4.new_code_cell(
            "def f(x, dim=-1):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n"
            "checks.softmax(f)"
        ),
    ]
    for count, cell in enumerate([c for c in nb.cells if c.cell_type == "code"], start=1):
        cell.execution_count = count
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    return nb


def test_the_rules_accept_a_good_notebook():
    assert problems(_good_notebook(), "42_example.ipynb", 1000) == []


@pytest.mark.parametrize(
    ("spoil", "complaint"),
    [
        (lambda nb: nb.cells[1].update(execution_count=None), "never executed"),
        (lambda nb: nb.cells[3].update(execution_count=5), "execution count 5 after 1"),
        (lambda nb: nb.cells[1].update(source="x = 1;"), "ends with ';'"),
        (
            lambda nb: nb.cells[1].outputs.append(
                nbformat.v4.new_output("error", ename="ValueError", evalue="", traceback=[])
            ),
            "stored error ValueError",
        ),
        (
            lambda nb: nb.cells[1].outputs.append(
                nbformat.v4.new_output("stream", name="stdout", text="/home/ana/run/x.pt\n")
            ),
            "absolute machine path",
        ),
        (
            lambda nb: nb.cells[1].outputs.append(
                nbformat.v4.new_output("stream", name="stderr", text="warning\n")
            ),
            "stderr output",
        ),
        (lambda nb: nb.cells[3].update(source="### BEGIN SOLUTION\n### END SOLUTION"), "calls no"),
        (lambda nb: nb.cells[3].update(source=nb.cells[3].source + "\nchecks.nope(f)"), "nope"),
        (lambda nb: nb.cells[2].update(source="Exercise: write softmax"), "no '### Exercise"),
        (lambda nb: nb.cells[2].update(source=nb.cells[2].source.replace("42.1", "7.1")),
         "exercise 7.1 in chapter 42"),
        (lambda nb: nb.cells[2].update(source=nb.cells[2].source.split("<details>")[0]),
         "fewer than two <details>"),
        (lambda nb: nb.cells[0].update(source="# 42 · Example\n## Summary"), "'Prerequisites'"),
        (lambda nb: nb.metadata.update(kernelspec={"name": "julia"}), "kernelspec"),
        (
            lambda nb: [
                c.update(source=f"# {IGNORE}\n" + c.source)
                for c in nb.cells
                if c.cell_type == "code"
            ],
            "compared by nbval",
        ),
    ],
)
def test_the_rules_catch_each_problem(spoil, complaint):
    nb = _good_notebook()
    spoil(nb)
    assert any(complaint in p for p in problems(nb, "42_example.ipynb", 1000))


def test_name_and_size_rules():
    assert any("NN_topic" in p for p in problems(_good_notebook(), "Example.ipynb", 10))
    assert any("budget" in p for p in problems(_good_notebook(), "42_x.ipynb", MAX_BYTES + 1))


def _figure_output() -> nbformat.NotebookNode:
    return nbformat.v4.new_output(
        "display_data",
        data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure size 800x300 with 1 Axes>"},
    )


def _with_cells(nb: nbformat.NotebookNode, cells: list[nbformat.NotebookNode]):
    """The notebook with `cells` appended and execution counts renumbered 1, 2, 3, ..."""
    nb.cells.extend(cells)
    for count, cell in enumerate([c for c in nb.cells if c.cell_type == "code"], start=1):
        cell.execution_count = count
    return nb


def _figure_cell(ignored: bool) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(("# " + IGNORE + "\n" if ignored else "") + "plt.show()")
    cell.outputs = [_figure_output()]
    return cell


def test_only_cells_with_text_output_count():
    figure_only = _figure_cell(ignored=False)
    assert not has_text_output(figure_only)
    figure_only.outputs.append(
        nbformat.v4.new_output("execute_result", data={"text/plain": "[1, 2]"})
    )
    assert has_text_output(figure_only)
    assert not has_text_output(nbformat.v4.new_code_cell("x = 1"))
    stderr = nbformat.v4.new_code_cell("warn()")
    stderr.outputs = [nbformat.v4.new_output("stream", name="stderr", text="warning\n")]
    assert not has_text_output(stderr)


def test_compared_figures_do_not_hide_ignored_text():
    # Old count: 4 of 5 cells with output compared (80%). Honest count: 1 of 2 text cells (50%).
    nb = _good_notebook()
    nb.cells[1].source = f"# {IGNORE}\nprint(1)"
    nb = _with_cells(nb, [_figure_cell(ignored=False) for _ in range(3)])
    assert any("1/2 cells with text output" in p for p in problems(nb, "42_example.ipynb", 1000))


def test_ignored_figures_do_not_count_against_a_notebook():
    nb = _with_cells(_good_notebook(), [_figure_cell(ignored=True) for _ in range(3)])
    assert problems(nb, "42_example.ipynb", 1000) == []


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ('assert a == b\nprint("a equals b: True")', True),
        ("torch.testing.assert_close(a, b)\nprint(f'close for all {n} rows: True')", True),
        ('print("a equals b:", torch.equal(a, b))', False),
        ('print(f"max abs difference {diff:.4f}")', False),
        ('print("True")  \nprint(x)', True),
        ('print(f"valid: {ok}")', False),
    ],
)
def test_a_printed_literal_true_is_caught(source, flagged):
    nb = _good_notebook()
    nb.cells[1].source = source
    assert any("literal string ending in 'True'" in p
               for p in problems(nb, "42_example.ipynb", 1000)) == flagged
