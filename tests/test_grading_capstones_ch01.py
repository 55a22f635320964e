"""Grading the chapter 02 capstones: passed, failed with the named mistake, not attempted."""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from llama_edu import classroom
from llama_edu.classroom import FAILED, NOT_ATTEMPTED, PASSED

SETUP = "from llama_edu import checks\nfrom llama_edu.tokenizer import merge, pair_counts"
GOOD_TRAIN = """def my_bpe_train(text, vocab_size):
    ids = list(text.encode("utf-8"))
    merges = []
    for new_id in range(256, vocab_size):
        counts = pair_counts(ids)
        best = max(sorted(counts), key=counts.get)  # the first of the most frequent, sorted
        ids = merge(ids, best, new_id)
        merges.append(best)
    return merges
checks.bpe_train(my_bpe_train)"""
STUB_TRAIN = """def my_bpe_train(text, vocab_size):
    raise NotImplementedError("Exercise: replace this line with your solution")
checks.bpe_train(my_bpe_train)"""
LEFTMOST_ENCODE = """def my_bpe_encode(text, merges):
    rank = {pair: k for k, pair in enumerate(merges)}
    ids = list(text.encode("utf-8"))
    while True:
        found = [p for p in zip(ids, ids[1:]) if p in rank]
        if not found:
            return ids
        ids = merge(ids, found[0], 256 + rank[found[0]])
checks.bpe_encode(my_bpe_encode)"""
GOOD_ENCODE = """def my_bpe_encode(text, merges):
    ids = list(text.encode("utf-8"))
    for k, pair in enumerate(merges):
        ids = merge(ids, pair, 256 + k)
    return ids
checks.bpe_encode(my_bpe_encode)"""


def write(path, *sources):
    nb = new_notebook(cells=[new_markdown_cell("# A submission")])
    nb.cells += [new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_capstones_pass_fail_with_the_named_mistake_or_are_not_attempted(tmp_path):
    first = write(tmp_path / "first-01.ipynb", SETUP, GOOD_TRAIN, LEFTMOST_ENCODE)
    second = write(tmp_path / "second-01.ipynb", SETUP, STUB_TRAIN, GOOD_ENCODE)
    expected = ["bpe_train", "bpe_encode"]
    one = {e.check: e for e in classroom.grade_notebook(first, 300, expected).exercises}
    two = {e.check: e for e in classroom.grade_notebook(second, 300, expected).exercises}
    assert one["bpe_train"].status == PASSED
    assert one["bpe_encode"].status == FAILED
    assert "you merge the leftmost pair that has a merge" in one["bpe_encode"].message
    assert two["bpe_train"].status == NOT_ATTEMPTED
    assert two["bpe_encode"].status == PASSED
