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
    nb = nbformat.read(classroom.default_notebook_dir() / "02_tokenization.ipynb", as_version=4)
    assert classroom.exercise_checks(nb) == [
        "pair_counts",
        "merge",
        "utf8_lengths",
        "bpe_train",
        "bpe_encode",
    ]


# --- forgeries: each must be graded NOT passed ---------------------------------------------

FORGED_PRINT = """def my_causal_mask(seq_len, start_pos=0):
    return torch.zeros(seq_len, start_pos + seq_len)
print("\\u2713 checks.causal_mask passed: printed by the submission")
checks.causal_mask(my_causal_mask)"""
FORGED_CHECK = """def my_repeat_kv(x, n_rep):
    return x
checks.repeat_kv = lambda fn: print("\\u2713 checks.repeat_kv passed: a lambda said so")
checks.repeat_kv(my_repeat_kv)"""
LIBRARY_FUNCTION = """from llama_edu.norm import rms_norm as my_rms_norm
checks.rms_norm(my_rms_norm)"""
TORCH_FUNCTION = """import functools
checks.softmax(functools.partial(torch.softmax, dim=-1))"""
PATCHED_COMPARISON = """import llama_edu.checks._core as core
core.close = lambda *args, **kwargs: True
torch.allclose = lambda *args, **kwargs: True
def my_attention(q, k, v, mask=None):
    return v
checks.attention(my_attention)"""
EXIT_AFTER_PRINT = """def my_swiglu(x, w1, w2, w3):
    return x
print("\\u2713 checks.swiglu passed: and then the cell stops")
raise SystemExit(0)
checks.swiglu(my_swiglu)"""
RELABELLED_LIBRARY = """from llama_edu.ffn import ffn_hidden_dim as my_ffn_hidden_dim
my_ffn_hidden_dim.__module__ = "__main__"  # pretend it was written in the notebook
checks.ffn_hidden_dim(my_ffn_hidden_dim)"""
STORED_PASS = """def my_top_k_filter(logits, k):
    return logits
checks.top_k_filter(my_top_k_filter)"""


def test_forged_passes_are_not_passed(tmp_path):
    """Printed lines, a replaced check, library functions, patched comparisons: all fail."""
    path = write(tmp_path / "forged.ipynb", SETUP, FORGED_PRINT, FORGED_CHECK, LIBRARY_FUNCTION,
                 TORCH_FUNCTION, PATCHED_COMPARISON, EXIT_AFTER_PRINT, RELABELLED_LIBRARY,
                 STORED_PASS)  # fmt: skip
    nb = nbformat.read(path, as_version=4)
    nb.cells[-1].execution_count = 1  # the handed-in file already shows a pass
    nb.cells[-1].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="\u2713 checks.top_k_filter passed\n")
    ]
    nbformat.write(nb, path)
    grade = classroom.grade_notebook(path, time_limit=240)
    assert grade.error is None
    found = by_check(grade)
    assert list(found) == ["causal_mask", "repeat_kv", "rms_norm", "softmax", "attention",
                           "swiglu", "ffn_hidden_dim", "top_k_filter"]  # fmt: skip
    assert {e.check: e.status for e in grade.exercises} == dict.fromkeys(found, FAILED)
    assert grade.passed == 0
    assert "-inf" in found["causal_mask"].message or "mask" in found["causal_mask"].message
    assert "from llama_edu.norm" in found["rms_norm"].message
    assert "write your own" in found["rms_norm"].message
    assert "from torch" in found["softmax"].message
    assert "llama_edu" in found["ffn_hidden_dim"].message
    assert "a library" in found["ffn_hidden_dim"].message


FORGED_VERDICT = """import os, stat
def my_repeat_kv(x, n_rep):
    line = b'0\\t{"check": "repeat_kv", "status": "passed", "message": "forged"}\\n'
    print(line.decode(), flush=True)
    for fd in range(1, 64):  # every open pipe, the grader's verdict pipe included
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.write(fd, line)
        except OSError:
            pass
    return x
checks.repeat_kv(my_repeat_kv)"""
LIBRARY_WRAPPER = """from llama_edu.norm import layer_norm
def my_layer_norm(x, weight, bias=None, eps=1e-5):
    return layer_norm(x, weight, bias, eps)
checks.layer_norm(my_layer_norm)"""
LIBRARY_MODULE = """import llama_edu.norm
def my_rms_norm(x, weight, eps=1e-5):
    norm = llama_edu.norm.RMSNorm(x.shape[-1], eps)  # its forward calls the library's rms_norm
    with torch.no_grad():
        norm.weight.copy_(weight)
    return norm(x).to(x.dtype)
checks.rms_norm(my_rms_norm)"""
TORCH_WRAPPER = """def my_softmax(x, dim=-1):
    return x.softmax(dim)
checks.softmax(my_softmax)"""
PATCH_WHEN_CALLED = """def my_swiglu(x, w1, w2, w3):
    torch.allclose = lambda *args, **kwargs: True  # in the grader's process, when called
    return torch.zeros_like(x)
checks.swiglu(my_swiglu)"""
OWN_ATTENTION = """import math
def my_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask
    return torch.softmax(scores, dim=-1) @ v  # torch.softmax is fine here: not this exercise
checks.attention(my_attention)"""
UNPICKLABLE = """import threading
lock = threading.Lock()
def my_ffn_hidden_dim(dim, multiple_of, ffn_dim_multiplier=None):
    with lock:
        return dim
checks.ffn_hidden_dim(my_ffn_hidden_dim)"""


def test_wrappers_and_forged_verdicts_fail_and_own_code_passes(tmp_path):
    path = write(tmp_path / "wrappers.ipynb", SETUP, FORGED_VERDICT, LIBRARY_WRAPPER,
                 LIBRARY_MODULE, TORCH_WRAPPER, PATCH_WHEN_CALLED, OWN_ATTENTION,
                 UNPICKLABLE)  # fmt: skip
    grade = classroom.grade_notebook(path, time_limit=240)
    assert grade.error is None
    found = by_check(grade)
    assert {e.check: e.status for e in grade.exercises} == {
        "repeat_kv": FAILED,
        "layer_norm": FAILED,
        "rms_norm": FAILED,
        "softmax": FAILED,
        "swiglu": FAILED,
        "attention": PASSED,  # checked after swiglu: torch.allclose was put back
        "ffn_hidden_dim": FAILED,
    }
    assert "forged" not in found["repeat_kv"].message
    assert "library's llama_edu.norm.layer_norm" in found["layer_norm"].message
    assert "library's llama_edu.norm.rms_norm" in found["rms_norm"].message
    assert "library's torch.Tensor.softmax" in found["softmax"].message
    assert "could not be copied to the grader" in found["ffn_hidden_dim"].message
    assert "changed torch.allclose" in found["swiglu"].message


# --- the exercise list by chapter (renamed submissions, a wheel without notebooks/) ---------


def test_the_shipped_exercise_list_matches_the_notebooks():
    """Regenerate with `python tools/make_exercise_list.py` when this fails."""
    shipped = classroom.shipped_exercise_list()
    assert shipped == classroom.exercise_list(classroom.default_notebook_dir())
    assert shipped["04"] == ["causal_mask", "attention", "repeat_kv"]
    assert shipped["05"][-1] == "attention_module"  # the capstone comes after RoPE


def test_chapter_number_is_the_first_two_digit_number():
    assert classroom.chapter_number("05_attention_alice.ipynb") == "05"
    assert classroom.chapter_number("alice-05.ipynb") == "05"
    assert classroom.chapter_number("2026_bob_03_v2.ipynb") == "03"
    assert classroom.chapter_number("notes.ipynb") is None


CORRECT_MASK = """def my_causal_mask(seq_len, start_pos=0):
    full = torch.full((seq_len, start_pos + seq_len), float("-inf"))
    return torch.triu(full, diagonal=start_pos + 1)
checks.causal_mask(my_causal_mask)"""


def test_renamed_or_wheel_submissions_get_the_chapters_exercises(tmp_path, monkeypatch):
    renamed = write(tmp_path / "alice-04.ipynb", SETUP, CORRECT_MASK)
    expected = [("causal_mask", PASSED), ("attention", NOT_ATTEMPTED),
                ("repeat_kv", NOT_ATTEMPTED)]  # fmt: skip
    grade = classroom.grade_notebook(renamed, time_limit=120)
    assert [(e.check, e.status) for e in grade.exercises] == expected
    monkeypatch.setattr(classroom, "default_notebook_dir", lambda: tmp_path / "no-notebooks")
    wheel = write(tmp_path / "04_attention.ipynb", SETUP, CORRECT_MASK)
    grade = classroom.grade_notebook(wheel, time_limit=120)
    assert [(e.check, e.status) for e in grade.exercises] == expected


def test_the_handed_in_function_is_found_in_cells_with_ipython_syntax():
    cell = "%time y = 1\n!echo hi\nprint('checks.softmax(x)')\nchecks.softmax(fn=my_softmax)"
    assert classroom._candidate_expression(cell, "softmax") == "my_softmax"
    found = classroom._candidate_expression("checks.merge(ns['my_merge'])", "merge")
    assert found == "ns['my_merge']"
    assert classroom._candidate_expression("checks.merge()", "merge") is None


SUBCLASSED_MODULE = """from llama_edu.attention import Attention
class MyAttention(Attention):  # the library's forward does the work
    pass
checks.attention_module(MyAttention)"""
RELABELLED_CLASS = """from llama_edu.model import Llama as MyLlama
MyLlama.__module__ = "__main__"
MyLlama.__qualname__ = MyLlama.__name__ = "MyLlama"
checks.llama_model(MyLlama)"""


def test_capstone_classes_from_the_library_fail(tmp_path):
    """A subclass of the library's module, or the library's class relabelled, is not the
    learner's; cloudpickle 3 rewrites code file names, so the code itself is compared."""
    path = write(tmp_path / "classes.ipynb", SETUP, SUBCLASSED_MODULE, RELABELLED_CLASS)
    grade = classroom.grade_notebook(path, time_limit=240)
    assert grade.error is None
    found = by_check(grade)
    assert found["attention_module"].status == FAILED
    assert "derives from llama_edu.attention.Attention" in found["attention_module"].message
    assert found["llama_model"].status == FAILED
    assert "llama_edu" in found["llama_model"].message and "model" in found["llama_model"].message
