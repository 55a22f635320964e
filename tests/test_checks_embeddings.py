"""The embedding checks: each passes correct solutions and names the typical mistakes."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from check_harness import table_tests
from torch import nn

from llama_edu import checks
from llama_edu.model import ModelArgs, count_params

# --------------------------------------------------------------------------- embedding_lookup


def lookup_reference(ids, table):
    return F.one_hot(ids, num_classes=table.shape[0]).to(table.dtype) @ table


def lookup_by_indexing(ids, table):
    """Written differently: plain indexing, which is what nn.Embedding does."""
    return table[ids]


def lookup_by_embedding(ids, table):
    return F.embedding(ids, table)


def lookup_by_loop(ids, table):
    """A hand-made one-hot built with a loop over the flattened ids."""
    flat = ids.reshape(-1)
    one_hot = torch.zeros(len(flat), table.shape[0], dtype=table.dtype)
    for row, token in enumerate(flat.tolist()):
        one_hot[row, token] = 1
    return (one_hot @ table).reshape(*ids.shape, table.shape[1])


def lookup_transposed(ids, table):
    return F.one_hot(ids, num_classes=table.shape[1]).to(table.dtype) @ table.T


def lookup_transposed_square(ids, table):
    """Indexes the columns: table.T[ids]."""
    return table.T[ids]


def lookup_minus_one(ids, table):
    return table[ids - 1]


def lookup_plus_one(ids, table):
    return F.one_hot(ids + 1, num_classes=table.shape[0]).to(table.dtype) @ table


def lookup_returns_one_hot(ids, table):
    return F.one_hot(ids, num_classes=table.shape[0]).to(table.dtype)


def lookup_flattened(ids, table):
    return F.one_hot(ids.reshape(-1), num_classes=table.shape[0]).to(table.dtype) @ table


def lookup_integer_one_hot(ids, table):
    return F.one_hot(ids, num_classes=table.shape[0]) @ table


def lookup_always_float32(ids, table):
    return F.one_hot(ids, num_classes=table.shape[0]).float() @ table


def lookup_no_num_classes(ids, table):
    return F.one_hot(ids).to(table.dtype) @ table


def lookup_table_cast_to_float32(ids, table):
    return F.one_hot(ids, num_classes=table.shape[0]).float() @ table.float()


def lookup_with_sigmoid(ids, table):
    return torch.sigmoid(lookup_reference(ids, table))


# --------------------------------------------------------------------------- embedding_params


def params_reference(vocab_size, dim, tied):
    return vocab_size * dim if tied else 2 * vocab_size * dim


def params_via_modules(vocab_size, dim, tied):
    """Written differently: build the two layers (without memory) and count their parameters."""
    with torch.device("meta"):
        embedding = nn.Embedding(vocab_size, dim)
        output = nn.Linear(dim, vocab_size, bias=False)
    if tied:
        output.weight = embedding.weight
    # ModuleList.parameters() yields a shared parameter once.
    return sum(p.numel() for p in nn.ModuleList([embedding, output]).parameters())


def params_as_numpy_int(vocab_size, dim, tied):
    return np.int64(vocab_size) * dim * (1 if tied else 2)


def params_tied_counted_twice(vocab_size, dim, tied):
    return 2 * vocab_size * dim


def params_no_output_layer(vocab_size, dim, tied):
    return vocab_size * dim


def params_with_output_bias(vocab_size, dim, tied):
    return params_reference(vocab_size, dim, tied) + vocab_size


def params_with_embedding_bias(vocab_size, dim, tied):
    return params_reference(vocab_size, dim, tied) + dim


def params_sum(vocab_size, dim, tied):
    return vocab_size + dim


def params_float(vocab_size, dim, tied):
    return params_reference(vocab_size, dim, tied) / 1


def params_tensor(vocab_size, dim, tied):
    return torch.tensor(params_reference(vocab_size, dim, tied))


def params_swapped(vocab_size, dim, tied):
    return params_reference(vocab_size, dim, not tied)


def params_math_prod_wrong(vocab_size, dim, tied):
    return math.prod([vocab_size, dim, 3])


# --------------------------------------------------------------------------- the tests

CHECKS = ["embedding_lookup", "embedding_params"]

CORRECT: list[tuple[str, Callable]] = [
    ("embedding_lookup", lookup_reference),
    ("embedding_lookup", lookup_by_indexing),
    ("embedding_lookup", lookup_by_embedding),
    ("embedding_lookup", lookup_by_loop),
    ("embedding_params", params_reference),
    ("embedding_params", params_via_modules),
    ("embedding_params", params_as_numpy_int),
]

WRONG: list[tuple[str, Callable, tuple[str, ...]]] = [
    ("embedding_lookup", lookup_transposed, ("columns of the table", "table.T")),
    ("embedding_lookup", lookup_transposed_square, ("columns of the table", "table.T")),
    ("embedding_lookup", lookup_minus_one, ("off by one", "row id - 1")),
    ("embedding_lookup", lookup_plus_one, ("off by one", "row id + 1")),
    ("embedding_lookup", lookup_returns_one_hot, ("one-hot matrix itself", "one_hot @ table")),
    ("embedding_lookup", lookup_flattened, ("flattened", "(2, 3, 3)")),
    ("embedding_lookup", lookup_integer_one_hot, ("raised RuntimeError", "int64", "table.dtype")),
    ("embedding_lookup", lookup_always_float32, ("float64", "raised RuntimeError", "table.dtype")),
    ("embedding_lookup", lookup_no_num_classes, ("num_classes", "ids.max() + 1", "(4x4 and 5x5)")),
    ("embedding_lookup", lookup_table_cast_to_float32, ("dtype float32", "table's dtype")),
    ("embedding_lookup", lookup_with_sigmoid, ("differs from the rows of the table",)),
    ("embedding_params", params_tied_counted_twice, ("tied=True", "reuses", "counted once")),
    ("embedding_params", params_no_output_layer, ("tied=False", "not tied", "forget the output")),
    ("embedding_params", params_with_output_bias, ("bias", "32,000", "bias=False")),
    ("embedding_params", params_with_embedding_bias, ("bias", "4,096", "no bias")),
    ("embedding_params", params_sum, ("added vocab_size and dim", "vocab_size * dim")),
    ("embedding_params", params_float, ("float", "must be an int")),
    ("embedding_params", params_tensor, ("tensor", "plain Python int")),
    ("embedding_params", params_swapped, ("tied=False", "own matrix")),
    ("embedding_params", params_math_prod_wrong, ("expected 262,144,000",)),
]


# the five tests every table of checks gets (tests/check_harness.py)
globals().update(table_tests(CORRECT, WRONG, CHECKS))


def test_in_place_changes_to_the_inputs_are_named():
    def lookup_and_scale_in_place(ids, table):
        table.mul_(2.0)
        return table[ids] / 2.0

    with pytest.raises(checks.CheckFailed, match="in place"):
        checks.embedding_lookup(lookup_and_scale_in_place)


def test_returning_a_list_is_named():
    with pytest.raises(checks.CheckFailed, match="should be a torch.Tensor, but it is list"):
        checks.embedding_lookup(lambda ids, table: table[ids].tolist())


def test_passing_the_result_instead_of_the_function_is_explained():
    with pytest.raises(TypeError, match="Pass the function without calling it"):
        checks.embedding_params(params_reference(10, 3, True))


def test_the_llama_sizes_in_the_chapter():
    assert (
        params_reference(32000, 4096, False)
        == count_params("llama2-7b", breakdown=True)["embeddings"] * 2
    )
    assert params_reference(128256, 2048, True) == 262_668_288
    untied = ModelArgs.from_name("llama3.2-1b", tie_embeddings=False)
    assert count_params(untied) - count_params("llama3.2-1b") == 128256 * 2048
