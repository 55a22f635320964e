"""`llama-edu grade`: real kernels run submitted notebooks; each exercise is reported."""

from __future__ import annotations

import json
import re
import shutil

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from llama_edu import classroom
from llama_edu.classroom import FAILED, NOT_ATTEMPTED, PASSED
from llama_edu.cli import main

SETUP = "import torch\nfrom llama_edu import checks"
GOOD_SOFTMAX = """def my_softmax(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)
checks.softmax(my_softmax)"""
WRONG_MASK = """def my_causal_mask(seq_len, start_pos=0):
    return torch.zeros(seq_len, start_pos + seq_len)
checks.causal_mask(my_causal_mask)"""
STUB_RMS = """def my_rms_norm(x, weight, eps=1e-5):
    raise NotImplementedError("Exercise: replace this line with your solution")
checks.rms_norm(my_rms_norm)"""
CRASHING_SWIGLU = "checks.swiglu(my_swiglu_that_was_never_defined)"
DEMO = """try:
    checks.softmax(lambda x, dim=-1: x)
except AssertionError as failure:
    print("a wrong answer looks like this")"""


def write(path, *sources):
    nb = new_notebook(cells=[new_markdown_cell("# A submission")])
    nb.cells += [new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, path)
    return path


def by_check(grade):
    return {e.check: e for e in grade.exercises}


def test_each_exercise_is_passed_failed_or_not_attempted(tmp_path):
    path = write(tmp_path / "mine.ipynb", SETUP, GOOD_SOFTMAX, WRONG_MASK, STUB_RMS,
                 CRASHING_SWIGLU, DEMO)  # fmt: skip
    grade = classroom.grade_notebook(path, time_limit=120)
    assert grade.error is None
    found = by_check(grade)
    assert [e.check for e in grade.exercises] == ["softmax", "causal_mask", "rms_norm", "swiglu"]
    assert found["softmax"].status == PASSED  # the later demonstration does not count
    assert found["causal_mask"].status == FAILED
    assert "-inf" in found["causal_mask"].message or "mask" in found["causal_mask"].message
    assert found["rms_norm"].status == NOT_ATTEMPTED
    assert found["swiglu"].status == FAILED and "NameError" in found["swiglu"].message
    assert grade.passed == 1


def test_expected_exercises_missing_from_the_submission_are_not_attempted(tmp_path):
    path = write(tmp_path / "mine.ipynb", SETUP, GOOD_SOFTMAX)
    grade = classroom.grade_notebook(path, time_limit=120, expected=["softmax", "merge"])
    assert [(e.check, e.status) for e in grade.exercises] == [
        ("softmax", PASSED),
        ("merge", NOT_ATTEMPTED),
    ]


def test_a_hanging_notebook_is_stopped_and_named(tmp_path):
    path = write(tmp_path / "hangs.ipynb", SETUP, "import time\ntime.sleep(600)", GOOD_SOFTMAX)
    grade = classroom.grade_notebook(path, time_limit=8)
    assert grade.error is not None and "time limit of 8 s" in grade.error
    assert grade.seconds < 60
    assert by_check(grade)["softmax"].status == NOT_ATTEMPTED


def test_a_crashing_kernel_is_reported_and_the_next_notebook_still_graded(tmp_path, capsys):
    crash = write(tmp_path / "crash.ipynb", SETUP, "import os\nos._exit(1)", GOOD_SOFTMAX)
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{ this is not a notebook")
    good = write(tmp_path / "good.ipynb", SETUP, GOOD_SOFTMAX)
    code = main(["grade", str(crash), str(broken), str(good), "--json", "--time-limit", "120"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1  # some notebooks could not be graded to the end
    assert [r["notebook"] for r in report] == ["crash.ipynb", "broken.ipynb", "good.ipynb"]
    assert "kernel died" in report[0]["error"]
    assert report[0]["exercises"] == [
        {"check": "softmax", "status": NOT_ATTEMPTED,
         "message": "the notebook stopped before this exercise"}
    ]  # fmt: skip
    assert "not a valid notebook" in report[1]["error"] and report[1]["exercises"] == []
    assert report[2]["error"] is None
    assert report[2]["exercises"][0]["status"] == PASSED


def test_a_student_version_of_a_real_chapter_grades_as_not_attempted(tmp_path, capsys):
    """The exercises come from the instructor notebook; the stub counts as not attempted."""
    classroom.write_student_versions(classroom.default_notebook_dir(), tmp_path / "students")
    student = tmp_path / "students" / "00_welcome.ipynb"
    instructor = tmp_path / "instructor" / "00_welcome.ipynb"
    instructor.parent.mkdir()
    shutil.copy(classroom.default_notebook_dir() / "00_welcome.ipynb", instructor)
    assert main(["grade", str(student), str(instructor), "--time-limit", "300"]) == 0
    text = capsys.readouterr().out
    blocks = text.split("00_welcome.ipynb: ")[1:]
    assert blocks[0].startswith("0/1 passed")
    assert re.search(r"not attempted +checks\.softmax - still raises NotImpl", blocks[0])
    assert blocks[1].startswith("1/1 passed")
    assert re.search(r"passed +checks\.softmax", blocks[1])


def test_exercise_checks_reads_solution_cells_only():
    nb = nbformat.read(classroom.default_notebook_dir() / "01_tokenization.ipynb", as_version=4)
    assert classroom.exercise_checks(nb) == ["pair_counts", "merge", "utf8_lengths"]
