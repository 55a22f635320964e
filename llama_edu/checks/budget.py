"""Checks for the accounting exercises: the KV cache per token, and forward FLOPs per token."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch

from ..model import ModelArgs
from ._core import call, check, fail

_PRESETS = ("llama2-7b", "llama3-8b", "llama2-70b", "llama3.2-1b", "tiny")


def _whole(out: object, label: str, what: str) -> int:
    """The result as an int, or a failure that says why it is not one."""
    if isinstance(out, torch.Tensor):
        fail(f"with {label} the result is a tensor ({out.tolist()}); return a plain Python "
             "number (int(...) or .item()).")
    if isinstance(out, bool) or not isinstance(out, numbers.Real):
        fail(f"with {label} the result is {out!r} ({type(out).__name__}); {what} is a number.")
    if float(out) != int(out):
        fail(f"with {label} the result is {out!r}, not a whole number; {what} is one. Use "
             "integer arithmetic: //, not /, or leave out the division.")
    return int(out)


# --------------------------------------------------------------------------- the KV cache


@check
def kv_cache_bytes_per_token(fn: Callable[..., int]) -> str:
    """Check `fn(args, dtype_bytes) -> int`: bytes of keys and values one token adds."""
    for name in _PRESETS:
        args = ModelArgs.from_name(name)
        for size in (2, 4):
            label = f"{name} and dtype_bytes={size}"
            out = _whole(call(fn, args, size), label, "a number of bytes")
            width = args.kv_heads * args.head_dim
            expected = 2 * args.n_layers * width * size
            if out == expected:
                continue
            mistakes = [
                (expected // 2, "you stored only keys (or only values): the cache keeps both, "
                 "so multiply by 2."),
                (2 * args.n_layers * args.n_heads * args.head_dim * size,
                 f"you used n_heads={args.n_heads}, but only the n_kv_heads={args.kv_heads} "
                 "key/value heads are cached: grouped-query attention shares them among the "
                 "query heads. Use args.n_kv_heads (args.kv_heads)."),
                (2 * width * size, f"you counted one layer; every one of the {args.n_layers} "
                 "layers caches its own keys and values."),
                (8 * expected, "you counted bits, not bytes: dtype_bytes is already in bytes "
                 "(2 for bf16), so do not multiply by 8."),
                (expected // size, "you left out dtype_bytes: each cached number takes "
                 "dtype_bytes bytes."),
                (expected * args.max_seq_len, f"you counted a whole context of "
                 f"max_seq_len={args.max_seq_len} tokens; the question is per token."),
            ]
            for wrong, message in mistakes:
                if out == wrong and wrong != expected:
                    fail(f"with {label}: {message}")
            fail(f"with {label} the result is {out:,}; expected {expected:,} = 2 (k and v) x "
                 f"{args.n_layers} layers x {args.kv_heads} kv heads x {args.head_dim} dims x "
                 f"{size} bytes.")
    return ("right on 5 presets (GQA and not) in 2- and 4-byte precision; counts k and v, "
            "every layer, only the kv heads")


# --------------------------------------------------------------------------- FLOPs per token


@check
def flops_per_token(fn: Callable[..., int]) -> str:
    """Check `fn(args, context) -> int`: forward FLOPs for one token attending to `context`."""
    for name in _PRESETS:
        args = ModelArgs.from_name(name)
        for context in (0, 1024):
            label = f"{name} and context={context}"
            out = _whole(call(fn, args, context), label, "a number of FLOPs")
            q, kv = args.n_heads * args.head_dim, args.kv_heads * args.head_dim
            per_layer = args.dim * q + 2 * args.dim * kv + q * args.dim + 3 * args.dim * \
                args.hidden_dim
            matmul = args.n_layers * per_layer + args.vocab_size * args.dim  # + output layer
            attention = 4 * args.n_layers * context * q
            expected = 2 * matmul + attention
            embedding = args.vocab_size * args.dim
            norms = (2 * args.n_layers + 1) * args.dim
            mistakes = [
                (matmul + attention // 2, "each weight in a matrix multiply costs 2 FLOPs (a "
                 "multiply and an add); count 2 per weight and 4 per attended position per "
                 "head dimension."),
                (2 * matmul, "the attention over the context is missing: q . k for each of the "
                 "context keys and the weighted sum of as many values, 2 x 2 x n_heads x "
                 "head_dim per position, in every layer.") if context else (None, ""),
                (2 * matmul + attention // 2, "you counted q . k but not the weighted sum of "
                 "the values: attention costs 2 x 2 x n_heads x head_dim per position.")
                if context else (None, ""),
                (expected + 2 * embedding, "the input embedding is a table lookup, not a "
                 "matrix multiply: it costs no FLOPs. Count the output layer's matrix only."),
                (expected - 2 * embedding, "the output layer (dim x vocab_size) is a matrix "
                 "multiply too, the largest single one in small models: count it."),
                (expected + 2 * norms, "the norms' weights are elementwise scales, not matrix "
                 "multiplies; leave them out."),
                (expected - 2 * args.n_layers * args.dim * kv, "with grouped-query attention "
                 "wk and wv are dim x (n_kv_heads x head_dim): count both of them.")
                if args.kv_heads != args.n_heads else (None, ""),
            ]
            if out == expected:
                continue
            for wrong, message in mistakes:
                if wrong is not None and out == wrong:
                    fail(f"with {label}: {message}")
            fail(f"with {label} the result is {out:,}; expected {expected:,}: 2 x "
                 f"{matmul:,} weights in matrix multiplies (the layers' and the output layer's) "
                 f"+ {attention:,} for attention.")
    return ("right on 5 presets with and without context: 2 FLOPs per matmul weight (output "
            "layer in, embedding lookup and norms out) plus 4 x layers x context x n_heads x "
            "head_dim")
