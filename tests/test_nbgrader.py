"""nbgrader support: cell metadata, hidden tests, and the real generate_assignment and autograde."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from llama_edu import checks, classroom
from llama_edu.checks import _core
from llama_edu.nbgrader_cells import (
    NbgraderMetadataError,
    add_nbgrader_metadata,
    delimiter_problems,
)

REPO = Path(__file__).resolve().parent.parent
needs_nbgrader = pytest.mark.skipif(
    importlib.util.find_spec("nbgrader") is None,
    reason="nbgrader is not installed; install the dev extra (pip install -e '.[dev]') to run "
    "the real nbgrader generate_assignment and autograde",
)

SETUP = "import torch\nfrom llama_edu import checks"
SOFTMAX_HEADER = (
    "### Exercise 42.1 · softmax (difficulty ★★☆, importance ★★★, about 10 minutes)\n\n"
    "Write `softmax(x, dim=-1)` without torch.softmax.\n\n"
    "<details><summary>Hint 1</summary>\n\nSubtract the maximum first.\n\n"
    "<details><summary>Hint 2</summary>\n\nThen exponentiate and divide by the sum.\n\n"
    "</details>\n</details>"
)
SOFTMAX_CELL = """def my_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    ### BEGIN SOLUTION
    shifted = x - x.amax(dim=dim, keepdim=True)
    e = shifted.exp()
    return e / e.sum(dim=dim, keepdim=True)
    ### END SOLUTION


checks.softmax(my_softmax)"""
RMS_HEADER = (  # the old header form, without importance
    "### Exercise 42.2 · rms_norm (difficulty ★☆☆, about 5 minutes)\n\n"
    "Write RMSNorm over the last axis, in float32, cast back, then scaled."
)
RMS_CELL = """def my_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    ### BEGIN SOLUTION
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)
    return normed.type_as(x) * weight
    ### END SOLUTION


checks.rms_norm(my_rms_norm)"""
DEMO = """try:
    checks.softmax(lambda x, dim=-1: x)
except checks.CheckFailed:
    print("a wrong softmax is caught")"""
# What students hand in (the released answer cell, filled in). Points: the difficulty stars.
GOOD_SOFTMAX = """def my_softmax(x, dim=-1):
    z = torch.exp(x - x.max(dim=dim, keepdim=True).values)
    return z / z.sum(dim=dim, keepdim=True)


checks.softmax(my_softmax)"""
WRONG_SOFTMAX = """def my_softmax(x, dim=-1):
    return torch.exp(x) / torch.exp(x).sum(dim=dim, keepdim=True)  # overflows at large x


checks.softmax(my_softmax)"""
GOOD_RMS = """def my_rms_norm(x, weight, eps):
    x32 = x.float()
    return (x32 / torch.sqrt((x32 * x32).mean(-1, keepdim=True) + eps)).type_as(x) * weight


checks.rms_norm(my_rms_norm)"""


def chapter() -> nbformat.NotebookNode:
    """A small notebook built like a workbook chapter, without nbgrader metadata."""
    nb = new_notebook(
        cells=[
            new_markdown_cell("# 42 · Example\n\nA chapter with two exercises."),
            new_code_cell(SETUP),
            new_markdown_cell("## Exercises"),
            new_markdown_cell(SOFTMAX_HEADER),
            new_code_cell(SOFTMAX_CELL),
            new_markdown_cell("### What a wrong answer looks like"),
            new_code_cell(DEMO),
            new_markdown_cell(RMS_HEADER),
            new_code_cell(RMS_CELL),
            new_markdown_cell("## Summary\n\nDone."),
        ]
    )
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def nbgrader_cells(nb: nbformat.NotebookNode) -> list[tuple[int, dict]]:
    return [
        (i, dict(c.metadata["nbgrader"]))
        for i, c in enumerate(nb.cells)
        if "nbgrader" in c.metadata
    ]


# --- the metadata, without nbgrader ---------------------------------------------------------


def test_exercise_cells_become_answers_each_followed_by_a_test_worth_its_stars():
    nb = add_nbgrader_metadata(chapter())
    nbformat.validate(nb)
    marked = nbgrader_cells(nb)
    assert [i for i, _ in marked] == [4, 5, 9, 10]  # answer, test (inserted), answer, test
    (_, softmax), (_, softmax_test), (_, rms), (_, rms_test) = marked
    for answer in (softmax, rms):
        assert (answer["solution"], answer["grade"], answer["locked"]) == (True, False, False)
        assert answer["schema_version"] == 3 and "points" not in answer
    for test, points in ((softmax_test, 2), (rms_test, 1)):  # ★★☆ and ★☆☆
        assert (test["solution"], test["grade"], test["locked"]) == (False, True, True)
        assert test["points"] == points and test["schema_version"] == 3
    ids = [m["grade_id"] for _, m in marked]
    assert len(set(ids)) == 4
    for index, name in ((5, "softmax"), (10, "rms_norm")):
        lines = nb.cells[index].source.split("\n")
        hidden = lines[lines.index(classroom.BEGIN_HIDDEN) + 1 : lines.index(classroom.END_HIDDEN)]
        assert hidden == [f'checks.require("{name}")']
    # everything else is untouched and carries no grading metadata
    others = [c for c in nb.cells if "nbgrader" not in c.metadata]
    assert [c.source for c in others] == [
        c.source for c in chapter().cells if c.source not in (SOFTMAX_CELL, RMS_CELL)
    ]


def test_applying_twice_changes_nothing_and_keeps_a_test_cells_outputs():
    once = add_nbgrader_metadata(chapter())
    once.cells[5].execution_count = 3  # as after a run of the notebook
    once.cells[5].outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
    twice = add_nbgrader_metadata(once)
    assert twice == once
    assert add_nbgrader_metadata(twice) == twice


def test_a_moved_or_removed_exercise_moves_or_drops_its_test_cell():
    nb = add_nbgrader_metadata(chapter())
    nb.cells[9].source = nb.cells[9].source.replace("checks.rms_norm", "checks.layer_norm")
    nb.cells[4].source = "print('no longer an exercise')"
    again = add_nbgrader_metadata(nb)
    ids = [m["grade_id"] for _, m in nbgrader_cells(again)]
    assert ids == ["answer_layer_norm", "test_layer_norm"]
    assert 'checks.require("layer_norm")' in again.cells[-2].source
    assert "nbgrader" not in again.cells[4].metadata


def test_a_pre_45_notebook_gets_test_cells_without_ids():
    nb = chapter()
    nb.nbformat_minor = 4
    for cell in nb.cells:
        cell.pop("id", None)
    nbformat.validate(add_nbgrader_metadata(nb))


@pytest.mark.parametrize(
    ("spoil", "complaint"),
    [
        (lambda nb: nb.cells[3].update(source="Exercise: softmax"), "without an '### Exercise"),
        (
            lambda nb: nb.cells[2].update(source="Write between `### BEGIN SOLUTION` and the end."),
            "cell 2 (markdown), line 1 contains 'BEGIN SOLUTION'",
        ),
        (
            lambda nb: nb.cells[1].update(source=SETUP + "\nprint('END SOLUTION')"),
            "cell 1 (code), line 3 contains 'END SOLUTION'",
        ),
    ],
)
def test_what_nbgrader_would_misread_is_named(spoil, complaint):
    nb = chapter()
    spoil(nb)
    with pytest.raises(NbgraderMetadataError, match="stop nbgrader metadata") as info:
        add_nbgrader_metadata(nb, name="42_example.ipynb")
    assert complaint in str(info.value) and "42_example.ipynb" in str(info.value)


def test_workbook_notebooks_carry_current_nbgrader_metadata():
    stale, problems = [], []
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        problems += delimiter_problems(nb, path.name)
        if not problems and add_nbgrader_metadata(nb, path.name) != nb:
            stale.append(path.name)
    assert not problems, "\n".join(problems)
    assert not stale, (
        f"{stale}: nbgrader metadata is missing or stale. Run "
        "`python tools/add_nbgrader_metadata.py` and re-execute the changed notebooks."
    )


def test_the_tool_writes_once_then_reports_up_to_date(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "tool", REPO / "tools" / "add_nbgrader_metadata.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    good, bad = tmp_path / "42_example.ipynb", tmp_path / "43_bad.ipynb"
    nbformat.write(chapter(), good)
    spoiled = chapter()
    spoiled.cells[3].source = "no header here"
    nbformat.write(spoiled, bad)
    spoiled = nbformat.read(bad, 4)

    before = nbformat.read(good, 4)
    assert tool.main(["--check", str(good)]) == 1 and nbformat.read(good, 4) == before
    assert tool.main([str(good)]) == 0
    assert nbformat.read(good, 4) == add_nbgrader_metadata(before)
    assert tool.main(["--check", str(good)]) == 0
    assert tool.main([str(good), str(bad)]) == 2
    out, err = capsys.readouterr()
    assert "42_example.ipynb: updated (3 points)" in out and "up to date (3 points)" in out
    assert "43_bad.ipynb" in err and "without an '### Exercise" in err
    assert nbformat.read(bad, 4) == spoiled


# --- the light path: student versions and checks.require --------------------------------------


@pytest.mark.slow
def test_student_versions_drop_hidden_tests_and_still_run_cleanly(tmp_path):
    from nbclient import NotebookClient

    student = classroom.student_notebook(add_nbgrader_metadata(chapter()))
    for cell in student.cells:
        assert "HIDDEN TESTS" not in cell.source and "checks.require" not in cell.source
    client = NotebookClient(student, timeout=120, kernel_name="python3")
    client.execute(cwd=str(tmp_path))  # raises on any error
    printed = "".join(
        o.get("text", "") for c in student.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "checks.softmax: not implemented yet" in printed
    assert "checks.rms_norm: not implemented yet" in printed


def test_unbalanced_hidden_test_markers_are_named():
    with pytest.raises(classroom.MarkerError, match="never closed"):
        classroom.strip_hidden_tests("x = 1\n### BEGIN HIDDEN TESTS\nassert x")
    with pytest.raises(classroom.MarkerError, match="without a matching"):
        classroom.strip_hidden_tests("### END HIDDEN TESTS")
    assert (
        classroom.strip_hidden_tests("a\n  ### BEGIN HIDDEN TESTS\n  b\n  ### END HIDDEN TESTS\nc")
        == "a\nc"
    )


@pytest.fixture
def fresh_results():
    saved = dict(_core._RESULTS)
    checks.reset_results()
    yield
    _core._RESULTS.clear()
    _core._RESULTS.update(saved)


def test_require_passes_only_after_the_check_passed(fresh_results):
    with pytest.raises(AssertionError, match="exercise softmax is not done: .*has not run"):
        checks.require("softmax")
    checks.softmax(lambda x, dim=-1: (x - x.amax(dim, keepdim=True)).exp().div(
        (x - x.amax(dim, keepdim=True)).exp().sum(dim, keepdim=True)))  # fmt: skip
    checks.require("softmax")

    def stub(x, dim=-1):
        raise NotImplementedError

    checks.softmax(stub)
    with pytest.raises(
        AssertionError, match="softmax is not done: your function still raises NotImpl"
    ):
        checks.require("softmax")
    with pytest.raises(checks.CheckFailed):
        checks.softmax(lambda x, dim=-1: x)
    with pytest.raises(AssertionError, match="softmax is not done: checks.softmax failed: "):
        checks.require("softmax")


def test_require_and_choose_are_not_taken_for_exercises():
    assert set(classroom.CHECK_HELPERS) == set(checks.HELPERS)
    assert set(checks.HELPERS) <= set(checks.__all__) and not set(checks.HELPERS) & set(
        checks.available()
    )
    nb = new_notebook(cells=[new_code_cell('checks.require("softmax")\nchecks.choose("a", f, g)')])
    nb.cells.append(new_code_cell("### BEGIN SOLUTION\n### END SOLUTION\nchecks.softmax(f)"))
    assert classroom.exercise_checks(nb) == ["softmax"]
    assert classroom.expected_exercises(Path("zz_none.ipynb"), nb) == ["softmax"]


# --- the real nbgrader ------------------------------------------------------------------------


def nbgrader_api(course: Path, db: Path):
    """nbgrader's own API (what `nbgrader generate_assignment` and `autograde` run) for a course."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config

    config = Config()
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.course_id = "llama"
    config.CourseDirectory.db_url = f"sqlite:///{db}"
    config.Execute.timeout = 120
    config.Exchange.root = str(course / "exchange")  # never the machine's /srv/nbgrader
    return NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)


def succeeded(result: dict) -> bool:
    """Assert that an nbgrader API call succeeded, showing its log and traceback otherwise."""
    assert result["success"], f"{result.get('log', '')}\n{result.get('error', '')}"
    return True


def hand_in(course: Path, student: str, answers: dict[str, str]) -> None:
    """Put the released notebook, with the given answer cells filled in, in submitted/."""
    released = nbformat.read(course / "release" / "ps1" / "42_example.ipynb", as_version=4)
    for cell in released.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
    folder = course / "submitted" / student / "ps1"
    folder.mkdir(parents=True)
    nbformat.write(released, folder / "42_example.ipynb")


@pytest.mark.slow
@needs_nbgrader
@pytest.mark.filterwarnings("ignore:Object of type .* not in session")  # nbgrader on SQLAlchemy 2
def test_real_nbgrader_generates_and_autogrades(tmp_path, monkeypatch):
    """A correct, a wrong and an untouched submission, graded by nbgrader itself (about 30 s)."""
    from nbgrader.api import Gradebook

    course = tmp_path / "course"
    db = course / "gradebook.db"
    (course / "source" / "ps1").mkdir(parents=True)
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))  # the kernels import this llama_edu
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "jupyter"))  # no personal config
    api = nbgrader_api(course, db)
    instructor = add_nbgrader_metadata(chapter())
    nbformat.write(instructor, course / "source" / "ps1" / "42_example.ipynb")

    assert succeeded(api.generate_assignment("ps1", force=True))
    released = nbformat.read(course / "release" / "ps1" / "42_example.ipynb", as_version=4)
    code = "\n".join(c.source for c in released.cells if c.cell_type == "code")
    assert "x.amax(dim=dim" not in code and "torch.rsqrt" not in code  # no solution
    assert "HIDDEN TESTS" not in code and "checks.require" not in code  # no hidden test
    ours = classroom.student_notebook(instructor)
    assert [c.source for c in released.cells if c.metadata.get("nbgrader", {}).get("grade")] == [
        c.source for c in ours.cells if c.metadata.get("nbgrader", {}).get("grade")
    ]

    hand_in(course, "alice", {"answer_softmax": GOOD_SOFTMAX, "answer_rms_norm": GOOD_RMS})
    hand_in(course, "bob", {"answer_softmax": WRONG_SOFTMAX, "answer_rms_norm": GOOD_RMS})
    hand_in(course, "carol", {})  # nothing done: both exercises still raise NotImplementedError
    for student in ("alice", "bob", "carol"):
        assert succeeded(api.autograde("ps1", student, force=True))

    with Gradebook(f"sqlite:///{db}") as gradebook:

        def score(student: str, exercise: str) -> float:
            return gradebook.find_grade(f"test_{exercise}", "42_example", "ps1", student).score

        assert gradebook.find_submission_notebook("42_example", "ps1", "alice").max_score == 3
        assert (score("alice", "softmax"), score("alice", "rms_norm")) == (2, 1)
        assert (score("bob", "softmax"), score("bob", "rms_norm")) == (0, 1)
        assert (score("carol", "softmax"), score("carol", "rms_norm")) == (0, 0)
    graded = nbformat.read(course / "autograded" / "bob" / "ps1" / "42_example.ipynb", 4)
    errors = [o for c in graded.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert any("exercise softmax is not done" in o.evalue for o in errors)
