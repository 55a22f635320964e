"""Student versions never show an exercise's answer: the measure, and `checks.choose`."""

from __future__ import annotations

import nbformat
import pytest

from llama_edu import checks
from llama_edu.classroom import answer_leaks, normal_line

ATTENTION_EXERCISE = '''def my_attention(q, k, v, mask=None):
    ### BEGIN SOLUTION
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask
    return torch.softmax(scores, dim=-1) @ v
    ### END SOLUTION


checks.attention(my_attention)'''

# The same idea worked out above the exercise, with other names and spacing.
WORKED_ATTENTION = """s = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])  # (seq, seq)
if causal is not None:
    s = s + causal
out = torch.softmax(s, dim=-1) @ V
print(out)"""


def notebook(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 99 · Test")]
    nb.cells += [nbformat.v4.new_code_cell(source) for source in sources]
    return nb


def test_normal_line_ignores_names_spacing_and_comments():
    assert normal_line("w = torch.softmax(s, dim=-1)  # weights") == normal_line(
        "weights=torch.softmax( scores ,dim=-1 )"
    )
    assert normal_line("x.mean(-1)") != normal_line("x.sum(-1)")


def test_a_worked_cell_with_other_names_is_a_leak():
    leaks = answer_leaks(notebook(WORKED_ATTENTION, ATTENTION_EXERCISE), "99_test.ipynb")
    assert len(leaks) == 1
    assert "checks.attention (cell 2)" in leaks[0] and "student cell 1" in leaks[0]


def test_a_cell_after_the_exercise_counts_too():
    leaks = answer_leaks(notebook(ATTENTION_EXERCISE, WORKED_ATTENTION), "99_test.ipynb")
    assert len(leaks) == 1 and "student cell 2" in leaks[0]


@pytest.mark.parametrize(
    "other",
    [
        "print(attention(q, k, v))",  # uses the library: shows nothing
        "scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])",  # one line of three
    ],
)
def test_no_leak_when_the_answer_stays_in_its_solution_block(other):
    assert answer_leaks(notebook(other, ATTENTION_EXERCISE), "99_test.ipynb") == []


def test_choose_uses_the_learners_version_only_after_its_check_passed(capsys):
    checks.reset_results()
    assert checks.choose("softmax", "mine", "library's") == "library's"
    assert "checks.softmax has not run" in capsys.readouterr().out

    def stub(x, dim=-1):
        raise NotImplementedError

    checks.softmax(stub)
    assert checks.choose("softmax", "mine", "library's", "softmax") == "library's"
    assert "is not implemented" in capsys.readouterr().out

    import torch

    checks.softmax(lambda x, dim=-1: torch.softmax(x, dim=dim))
    assert checks.choose("softmax", "mine", "library's") == "mine"
    assert "Using your softmax" in capsys.readouterr().out
    checks.reset_results()
