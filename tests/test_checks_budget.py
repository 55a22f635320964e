"""The accounting checks: each passes correct solutions and names the typical mistakes."""

from __future__ import annotations

import torch
from check_harness import table_tests

from llama_edu import budget

# ------------------------------------------------------------------ kv_cache_bytes_per_token


def kv_reference(args, dtype_bytes):
    return int(budget.kv_cache_bytes_per_token(args, dtype_bytes))


def kv_by_tensors(args, dtype_bytes):
    """Written differently: the size of one token's cache built as tensors, k and v per layer."""
    one = torch.empty(args.n_kv_heads or args.n_heads, args.dim // args.n_heads)
    return sum(2 * one.numel() * dtype_bytes for _ in range(args.n_layers))


def kv_only_keys(args, dtype_bytes):
    return args.n_layers * args.kv_heads * args.head_dim * dtype_bytes


def kv_all_heads(args, dtype_bytes):
    return 2 * args.n_layers * args.n_heads * args.head_dim * dtype_bytes


def kv_one_layer(args, dtype_bytes):
    return 2 * args.kv_heads * args.head_dim * dtype_bytes


def kv_bits(args, dtype_bytes):
    return 8 * kv_reference(args, dtype_bytes)


def kv_whole_context(args, dtype_bytes):
    return kv_reference(args, dtype_bytes) * args.max_seq_len


def kv_float(args, dtype_bytes):
    return kv_reference(args, dtype_bytes) / 3


# --------------------------------------------------------------------------- flops_per_token


def flops_reference(args, context):
    return budget.flops_per_token(args, context)


def flops_from_modules(args, context):
    """Written differently: every nn.Linear of the model, built on the meta device."""
    from llama_edu.model import Llama

    with torch.device("meta"):
        model = Llama(args)
    # the output layer is an nn.Linear even when its weight is the embedding table
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return 2 * weights + 4 * args.n_layers * context * args.n_heads * args.head_dim


def flops_no_factor_two(args, context):
    return flops_reference(args, context) // 2


def flops_no_attention(args, context):
    return budget.flops_per_token(args, 0)


def flops_only_scores(args, context):
    return budget.flops_per_token(args, 0) + 2 * args.n_layers * context * args.n_heads * \
        args.head_dim


def flops_with_embedding(args, context):
    return flops_reference(args, context) + 2 * args.vocab_size * args.dim


def flops_without_output(args, context):
    return flops_reference(args, context) - 2 * args.vocab_size * args.dim


def flops_with_norms(args, context):
    return flops_reference(args, context) + 2 * (2 * args.n_layers + 1) * args.dim


CHECKS = ["kv_cache_bytes_per_token", "flops_per_token"]
CORRECT = [
    ("kv_cache_bytes_per_token", kv_reference),
    ("kv_cache_bytes_per_token", kv_by_tensors),
    ("flops_per_token", flops_reference),
    ("flops_per_token", flops_from_modules),
]
WRONG = [
    ("kv_cache_bytes_per_token", kv_only_keys, ["only keys", "multiply by 2"]),
    ("kv_cache_bytes_per_token", kv_all_heads, ["n_kv_heads", "grouped-query"]),
    ("kv_cache_bytes_per_token", kv_one_layer, ["one layer"]),
    ("kv_cache_bytes_per_token", kv_bits, ["bits, not bytes"]),
    ("kv_cache_bytes_per_token", kv_whole_context, ["per token"]),
    ("kv_cache_bytes_per_token", kv_float, ["not a whole number"]),
    ("flops_per_token", flops_no_factor_two, ["2 FLOPs", "multiply and an add"]),
    ("flops_per_token", flops_no_attention, ["attention over the context is missing"]),
    ("flops_per_token", flops_only_scores, ["weighted sum of the values"]),
    ("flops_per_token", flops_with_embedding, ["table lookup", "no FLOPs"]),
    ("flops_per_token", flops_without_output, ["output layer", "count it"]),
    ("flops_per_token", flops_with_norms, ["norms"]),
]

globals().update(table_tests(CORRECT, WRONG, CHECKS))
