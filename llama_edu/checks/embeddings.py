"""Checks for the embeddings chapter: the lookup as one-hot times a table, and parameter counts."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ._core import Mistake, call, check, close, fail

_LOOKUP_HINT = (
    "Build one_hot = F.one_hot(ids, num_classes=table.shape[0]).to(table.dtype), of shape "
    "(*ids.shape, vocab_size), and return one_hot @ table, of shape (*ids.shape, dim)."
)


# --------------------------------------------------------------------------- embedding lookup


@check
def embedding_lookup(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(ids, table) -> (*ids.shape, dim)`: row ids[...] of `table`, via one-hot."""
    gen = torch.Generator().manual_seed(0)
    # (label, ids, vocab_size, dim). The first case has a square table, so that using
    # table.T or returning the one-hot matrix gives the right shape and is caught by its values.
    cases = [
        ("ids [3, 1, 2, 3] and a square 5 x 5 table", torch.tensor([3, 1, 2, 3]), 5, 5),
        ("ids [2, 6, 0, 5] and a 7 x 4 table", torch.tensor([2, 6, 0, 5]), 7, 4),
        ("2-D ids of shape (2, 3) and a 10 x 3 table", torch.tensor([[1, 4, 4], [0, 7, 2]]), 10, 3),
        ("3-D ids of shape (2, 2, 3) and a 9 x 6 table", torch.arange(12).view(2, 2, 3) % 9, 9, 6),
        ("a single id, ids of shape (1,), and an 8 x 5 table", torch.tensor([4]), 8, 5),
    ]
    for label, ids, vocab_size, dim in cases:
        table = torch.randn(vocab_size, dim, generator=gen)
        _check_lookup(fn, ids, table, label)

    ids = torch.tensor([[0, 5, 3], [5, 1, 1]])
    table = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    _check_lookup(fn, ids, table, "a float64 table")
    return (
        "equals table[ids] on 6 inputs (1-D, 2-D and 3-D ids, square and non-square tables, "
        "float64); keeps the table's dtype"
    )


def _check_lookup(
    fn: Callable[..., torch.Tensor], ids: torch.Tensor, table: torch.Tensor, label: str
) -> None:
    """Fail, naming the likely mistake, unless fn(ids, table) equals table[ids]."""
    ids_in, table_in = ids.clone(), table.clone()
    try:
        out = call(fn, ids_in, table_in)
    except NotImplementedError:
        raise
    except Exception as failure:  # call() already described the crash
        cause = failure.__cause__ if failure.__cause__ is not None else failure
        fail(f"with {label}: {failure}\n{_crash_hint(str(cause), table)}")
    if not torch.equal(ids_in, ids) or not torch.equal(table_in, table):
        fail(
            "your function changed ids or the table in place. Compute a new tensor and leave "
            "the inputs as they are."
        )
    if not isinstance(out, torch.Tensor):
        fail(f"the result should be a torch.Tensor, but it is {type(out).__name__}.")
    vocab_size, dim = table.shape
    expected = table[ids]
    one_hot = F.one_hot(ids, vocab_size).to(table.dtype)
    if close(out, expected):
        if out.dtype != table.dtype:
            fail(
                f"with {label} the result has dtype {_name(out.dtype)}; it should keep the "
                f"table's dtype ({_name(table.dtype)}). Convert the one-hot matrix to "
                "table.dtype instead of converting the table."
            )
        return
    mistakes: list[Mistake] = [
        (
            one_hot,
            "you returned the one-hot matrix itself. It only says which row to take; multiply "
            "it by the table to get the vectors: one_hot @ table.",
        ),
        (
            table.T[ids] if vocab_size == dim else None,
            "your result holds columns of the table, not rows: you used table.T. Row i of "
            "the table (table[i]) is the vector of token i, so compute one_hot @ table, with "
            "one_hot of shape (*ids.shape, vocab_size).",
        ),
        (
            table[ids - 1],
            "off by one: you took row id - 1. Ids start at 0, and token i uses row i of the "
            "table. Do not shift the ids.",
        ),
        (
            table[(ids + 1) % vocab_size],
            "off by one: you took row id + 1. Ids start at 0, and token i uses row i of the "
            "table. Do not shift the ids.",
        ),
        (
            expected.reshape(-1, dim),
            f"the result is flattened to shape {tuple(out.shape)}. Keep the shape of ids and "
            f"add the feature axis: {(*ids.shape, dim)}. F.one_hot keeps the shape of ids, "
            "and @ works on the last axis.",
        ),
    ]
    for wrong, message in mistakes:
        if wrong is not None and close(out, wrong):
            fail(f"with {label}: {message}")
    expected_shape = (*ids.shape, dim)
    if tuple(out.shape) != expected_shape:
        if tuple(out.shape) == (*ids.shape, vocab_size):
            fail(
                f"with {label} the result has shape {tuple(out.shape)}, one entry per "
                f"vocabulary item: is it the one-hot matrix? Multiply it by the table. "
                f"Expected {expected_shape}."
            )
        fail(
            f"with {label} the result has shape {tuple(out.shape)}; expected "
            f"{expected_shape}, that is (*ids.shape, dim). {_LOOKUP_HINT}"
        )
    fail(
        f"with {label} the result differs from the rows of the table. Each id must give its "
        f"own row: result[j] = table[ids[j]]. {_LOOKUP_HINT}"
    )


def _crash_hint(message: str, table: torch.Tensor) -> str:
    """A hint for the usual ways a one-hot lookup crashes, from the error message."""
    vocab_size = table.shape[0]
    if "dtype" in message:
        return (
            "The one-hot matrix and the table have different dtypes. F.one_hot returns "
            "integers (int64); convert it to the table's own dtype with .to(table.dtype) "
            "(not always .float(): the table may be float64) before the matrix product."
        )
    if "shapes cannot be multiplied" in message:
        return (
            f"The matrix shapes do not fit. The one-hot matrix needs one column per row of "
            f"the table: F.one_hot(ids, num_classes=table.shape[0]) (here {vocab_size}); "
            "without num_classes it has only ids.max() + 1 columns. Multiply it by the table "
            "itself, not by table.T."
        )
    if (
        "non-negative" in message
        or "smaller than num_classes" in message
        or ("out of" in message and "index" in message)
    ):
        return (
            f"An id fell outside 0 .. {vocab_size - 1}: off by one? Ids start at 0 and token i "
            "uses row i of the table. Do not shift the ids."
        )
    return _LOOKUP_HINT


# --------------------------------------------------------------------------- parameter counts


@check
def embedding_params(fn: Callable[..., int]) -> str:
    """Check `fn(vocab_size, dim, tied) -> int`: input embedding plus output layer, tied once."""
    cases = [
        (32000, 4096, False),  # Llama 2 7B
        (128256, 2048, True),  # Llama 3.2 1B
        (512, 128, False),  # the tiny preset
        (128256, 4096, False),  # Llama 3 8B
        (10, 3, True),
        (7, 5, False),
    ]
    for vocab_size, dim, tied in cases:
        label = f"vocab_size={vocab_size}, dim={dim}, tied={tied}"
        out = call(fn, vocab_size, dim, tied)
        if isinstance(out, torch.Tensor) and out.numel() == 1:
            fail(
                f"with {label} the result is a tensor ({out.item()}); return a plain Python "
                "int (int(...) or .item())."
            )
        if isinstance(out, bool) or not isinstance(out, numbers.Integral):
            fail(
                f"with {label} the result is {out!r} ({type(out).__name__}); a number of "
                "parameters must be an int. Use integer arithmetic (*, +), not /, or wrap the "
                "result in int(...)."
            )
        out = int(out)
        table = vocab_size * dim
        expected = table if tied else 2 * table
        if out == expected:
            continue
        no_bias = (
            "Llama's embedding and output layers have no bias: the embedding is a plain table "
            "and the output is nn.Linear(dim, vocab_size, bias=False). Count only the "
            "vocab_size x dim matrices."
        )
        mistakes = [
            (
                2 * table if tied else None,
                f"the output layer reuses the embedding table, so the two are one "
                f"matrix, counted once ({vocab_size} x {dim} = {table:,}), not twice.",
            ),
            (
                table if not tied else None,
                f"the output layer is not tied, so it has its own matrix of the same shape "
                f"({vocab_size} x {dim}), so count the table twice: 2 x {table:,} = "
                f"{2 * table:,}. Did you forget the output layer?",
            ),
            (
                vocab_size + dim,
                "you added vocab_size and dim. A table with vocab_size rows "
                "of dim numbers holds vocab_size * dim parameters.",
            ),
            (
                2 * (vocab_size + dim),
                "you added vocab_size and dim. A table with vocab_size "
                "rows of dim numbers holds vocab_size * dim parameters.",
            ),
        ]
        for extra in (vocab_size, dim, vocab_size + dim, 2 * vocab_size, 2 * dim):
            mistakes.append((expected + extra, f"you added {extra:,} bias parameters. {no_bias}"))
        for wrong, message in mistakes:
            if wrong is not None and out == wrong:
                fail(f"with {label}: {message}")
        fail(
            f"with {label} the result is {out:,}; expected {expected:,}. The input embedding "
            "is a vocab_size x dim table; the output layer is a second matrix of the same "
            "shape unless tied is True, when both use the same matrix."
        )
    return (
        "right count on 6 configurations (Llama 2 7B, Llama 3 8B, Llama 3.2 1B, tiny, tied "
        "and untied); tied weights counted once; no bias"
    )


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
