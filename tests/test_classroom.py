"""The student-version generator and the `llama-edu student` command."""

import ast
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from student_run import browser_missing, student_run_problems

from llama_edu import classroom

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

EXERCISE = '''def double(x):
    """Twice x."""
    ### BEGIN SOLUTION
    y = x + x
    return y
    ### END SOLUTION


def triple(x):
    ### BEGIN SOLUTION
    return 3 * x
    ### END SOLUTION


print(double(2))'''


def make_notebook(exercise_source: str = EXERCISE) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 99 · Test\n\nSome prose with ### BEGIN SOLUTION in it."),
        nbformat.v4.new_code_cell("x = 1\nprint(x)"),
        nbformat.v4.new_code_cell(exercise_source),
        nbformat.v4.new_code_cell("print('after')"),
    ]
    for count, cell in enumerate(nb.cells[1:], start=1):
        cell.execution_count = count
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="something\n")]
    return nb


def test_solutions_become_indented_stubs():
    student = classroom.student_notebook(make_notebook())
    source = student.cells[2].source
    assert "BEGIN SOLUTION" not in source and "END SOLUTION" not in source
    assert "x + x" not in source and "3 * x" not in source
    stub = f'    raise NotImplementedError("{classroom.STUB_MESSAGE}")'
    assert source.count(stub) == 2
    assert '    """Twice x."""' in source and source.endswith("print(double(2))")
    ast.parse(source)


def test_other_cells_untouched_and_outputs_cleared():
    original = make_notebook()
    student = classroom.student_notebook(original)
    nbformat.validate(student)
    assert len(student.cells) == len(original.cells)
    for index in (0, 1, 3):
        assert student.cells[index].source == original.cells[index].source
    for cell in student.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert original.cells[1].outputs, "the instructor notebook itself must not be modified"


@pytest.mark.parametrize(
    ("source", "complaint"),
    [
        ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "never closed"),
        ("def f():\n    return 1\n    ### END SOLUTION\n", "without a matching"),
        (
            "def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    return 1\n"
            "    ### END SOLUTION\n    ### END SOLUTION\n",
            "cannot be nested",
        ),
    ],
)
def test_bad_markers_name_notebook_and_cell_and_write_nothing(tmp_path, source, complaint):
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(make_notebook(), src / "01_good.ipynb")
    nbformat.write(make_notebook(source), src / "02_bad.ipynb")
    out = tmp_path / "out"
    with pytest.raises(classroom.MarkerError) as info:
        classroom.write_student_versions(src, out)
    message = str(info.value)
    assert "02_bad.ipynb" in message and "cell 2" in message and complaint in message
    assert not out.exists() or not any(out.iterdir())


def test_refuses_to_overwrite_the_source(tmp_path):
    nbformat.write(make_notebook(), tmp_path / "01_x.ipynb")
    with pytest.raises(ValueError, match="source folder"):
        classroom.write_student_versions(tmp_path, tmp_path)


def test_cli_writes_valid_student_versions_of_the_workbook(tmp_path):
    out = tmp_path / "students"
    done = subprocess.run(
        [sys.executable, "-m", "llama_edu.cli", "student", str(out), "--source", str(NOTEBOOKS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    originals = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert [p.name for p in sorted(out.glob("*.ipynb"))] == [p.name for p in originals]
    for original_path in originals:
        original = nbformat.read(original_path, as_version=4)
        student = nbformat.read(out / original_path.name, as_version=4)
        nbformat.validate(student)
        assert len(student.cells) == len(original.cells)
        for before, after in zip(original.cells, student.cells, strict=True):
            if before.cell_type == "code":
                assert after.outputs == [] and after.execution_count is None
                assert "### BEGIN SOLUTION" not in after.source
                assert "HIDDEN TESTS" not in after.source  # nbgrader's hidden tests go too
            if not classroom.has_solution(before.source) and "HIDDEN TESTS" not in before.source:
                assert after.source == before.source


def test_cli_reports_marker_errors_without_traceback(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(make_notebook("### BEGIN SOLUTION\nx = 1\n"), src / "03_bad.ipynb")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "llama_edu.cli",
            "student",
            str(tmp_path / "o"),
            "--source",
            str(src),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "03_bad.ipynb, cell 2" in done.stderr and "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("students")
    classroom.write_student_versions(NOTEBOOKS, out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", [p.name for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))])
def test_student_version_runs_top_to_bottom(student_dir, name):
    """Unsolved exercises only say "not implemented yet"; every other cell still runs.

    Where the browser tests can run, they run the student versions in JupyterLab and judge them
    the same way (tests/ui), so this kernel run would only repeat them.
    """
    if browser_missing() is None:
        pytest.skip("tests/ui/ runs the student versions in JupyterLab")
    nb = nbformat.read(student_dir / name, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    assert student_run_problems(nb, name) == []
