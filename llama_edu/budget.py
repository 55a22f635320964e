"""Memory and compute accounting for a Llama: what its weights, training, cache and tokens cost.

Every figure follows from `ModelArgs` alone, by arithmetic a learner can redo on paper:

* `param_counts`: parameters by part (embedding, attention, feed-forward, norms, output);
* `weight_bytes`: the weights stored at a given precision (`BYTES_PER_WEIGHT`: fp32, bf16,
  int8, and llama.cpp's block formats Q8_0 and Q4_0, whose 32-weight blocks carry one fp16
  scale each);
* `kv_cache_bytes_per_token` and `kv_cache_bytes`: keys and values kept during generation;
* `train_memory_bytes`: weights, gradients, AdamW's two moments and an estimate of the
  activations kept for the backward pass;
* `flops_per_token` (2 per weight of every matrix multiply, plus attention over the context)
  and `training_flops` (6 N D);
* `tokens_per_parameter`: how long a model was trained for its size (Chinchilla: about 20).

The counts are tested against the model itself (built on PyTorch's meta device, so an 8B
model costs no memory), and the byte figures against published ones.
"""

from __future__ import annotations

from typing import Any

from ._validate import as_int, is_number
from .model import ModelArgs

__all__ = [
    "BYTES_PER_WEIGHT",
    "CHINCHILLA_TOKENS_PER_PARAM",
    "activation_values_per_token",
    "fit_report",
    "flops_per_token",
    "kv_cache_bytes",
    "kv_cache_bytes_per_token",
    "inference_memory",
    "param_counts",
    "tokens_per_parameter",
    "train_memory_bytes",
    "training_flops",
    "weight_bytes",
]

BYTES_PER_WEIGHT: dict[str, float] = {
    "fp32": 4.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "int8": 1.0,  # one byte a weight; the per-row scales are left out (a few KB)
    "q8_0": 34 / 32,  # llama.cpp: 32 int8 weights + one fp16 scale = 34 bytes (8.5 bits)
    "q4_0": 18 / 32,  # llama.cpp: 32 4-bit weights (16 bytes) + one fp16 scale = 4.5 bits
    "int4": 0.5,
}
"""Bytes per weight of each storage format."""

CHINCHILLA_TOKENS_PER_PARAM = 20
"""Hoffmann et al. (2022): compute-optimal training uses about 20 tokens per parameter."""


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def _args(args: Any, fn: str, llama_only: bool = True) -> ModelArgs:
    if isinstance(args, str):
        return ModelArgs.from_name(args)
    if not isinstance(args, ModelArgs):
        raise TypeError(f"{fn} expects a ModelArgs or a preset name such as 'llama3-8b', got "
                        f"{type(args).__name__}; pass model.args or ModelArgs.from_name('tiny')")
    if llama_only and not args.is_llama:
        raise ValueError(f"{fn} counts Llama's own layout, but these args change "
                         f"{args.changed_switches()}; use model.num_params() for an ablation "
                         "variant")
    return args


def _count(value: Any, name: str, fn: str, minimum: int = 0) -> int:
    n = as_int(value)
    if n is None or n < minimum:
        raise ValueError(f"{fn}: {name} must be a whole number >= {minimum}, got {value!r}")
    return n


def _bytes(value: Any, name: str, fn: str) -> float:
    if isinstance(value, str):
        if value not in BYTES_PER_WEIGHT:
            raise ValueError(f"{fn}: unknown format {value!r} for {name}; choose one of "
                             f"{', '.join(BYTES_PER_WEIGHT)}, or give bytes per value as a number")
        return BYTES_PER_WEIGHT[value]
    if not is_number(value) or not 0 < float(value) <= 16:
        raise ValueError(f"{fn}: {name} must be a format name ({', '.join(BYTES_PER_WEIGHT)}) or "
                         f"a number of bytes per value > 0, e.g. 2 for bf16; got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------
# Parameters and weights
# --------------------------------------------------------------------------------------------


def param_counts(args: ModelArgs | str) -> dict[str, int]:
    """Parameters by part: embeddings, attention, feed_forward, norms, output, and total."""
    a = _args(args, "param_counts")
    q_width, kv_width = a.n_heads * a.head_dim, a.kv_heads * a.head_dim
    attention = a.dim * q_width + 2 * a.dim * kv_width + q_width * a.dim  # wq, wk, wv, wo
    feed_forward = 3 * a.dim * a.hidden_dim  # w1, w2, w3
    parts = {
        "embeddings": a.vocab_size * a.dim,
        "attention": a.n_layers * attention,
        "feed_forward": a.n_layers * feed_forward,
        "norms": (2 * a.n_layers + 1) * a.dim,  # two RMSNorm weights per block, one at the end
        "output": 0 if a.tie_embeddings else a.vocab_size * a.dim,
    }
    parts["total"] = sum(parts.values())
    return parts


def weight_bytes(args: ModelArgs | str, dtype: str | float = "bf16") -> float:
    """Bytes for all the weights stored in `dtype` (a name in BYTES_PER_WEIGHT, or bytes)."""
    return param_counts(args)["total"] * _bytes(dtype, "dtype", "weight_bytes")


# --------------------------------------------------------------------------------------------
# Generation: the KV cache
# --------------------------------------------------------------------------------------------


def kv_cache_bytes_per_token(args: ModelArgs | str, dtype_bytes: str | float = 2) -> float:
    """Bytes of keys and values one token adds to the cache: 2 * layers * kv heads * head_dim."""
    a = _args(args, "kv_cache_bytes_per_token", llama_only=False)  # the switches do not matter
    size = _bytes(dtype_bytes, "dtype_bytes", "kv_cache_bytes_per_token")
    return 2 * a.n_layers * a.kv_heads * a.head_dim * size


def kv_cache_bytes(args: ModelArgs | str, context: int, batch_size: int = 1,
                   dtype_bytes: str | float = 2) -> float:
    """Bytes of the KV cache for `batch_size` sequences of `context` tokens."""
    fn = "kv_cache_bytes"
    n = _count(context, "context", fn) * _count(batch_size, "batch_size", fn)
    return n * kv_cache_bytes_per_token(args, dtype_bytes)


def inference_memory(
    args: ModelArgs | str,
    context: int,
    batch_size: int = 1,
    weight_dtype: str | float = "bf16",
    kv_dtype: str | float = "bf16",
    memory_gib: float | None = None,
) -> dict[str, Any]:
    """What generation needs: weights plus the KV cache of `batch_size` full contexts.

    Returns bytes for "weights", "kv_cache" and "total", and with `memory_gib` also "fits"
    (total <= memory) and "free" (bytes left, negative when it does not fit). Activations of
    one decoding step are small beside these and are left out. The "will it fit?" widget is
    an ipywidgets.interactive around this function.
    """
    fn = "inference_memory"
    out: dict[str, Any] = {
        "weights": weight_bytes(args, weight_dtype),
        "kv_cache": kv_cache_bytes(args, context, batch_size, kv_dtype),
    }
    out["total"] = out["weights"] + out["kv_cache"]
    if memory_gib is not None:
        if not is_number(memory_gib) or float(memory_gib) <= 0:
            raise ValueError(f"{fn}: memory_gib must be a number of GiB > 0, got {memory_gib!r}")
        memory = float(memory_gib) * 2**30
        out["fits"] = out["total"] <= memory
        out["free"] = memory - out["total"]
    return out


def _gib(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB"


def fit_report(
    args: ModelArgs | str,
    context: int,
    batch_size: int = 1,
    weight_dtype: str | float = "bf16",
    kv_dtype: str | float = "bf16",
    memory_gib: float = 16.0,
) -> str:
    """The "will it fit?" answer as text: weights, KV cache, total, and what is left or missing."""
    plan = inference_memory(args, context, batch_size, weight_dtype, kv_dtype, memory_gib)
    name = args if isinstance(args, str) else "this model"
    verdict = (f"fits, {_gib(plan['free'])} to spare" if plan["fits"]
               else f"does NOT fit: {_gib(-plan['free'])} short")
    rows = [(f"weights ({weight_dtype})", plan["weights"]), (f"KV cache ({kv_dtype})",
            plan["kv_cache"]), ("total", plan["total"])]  # fmt: skip
    lines = [f"{name}, {batch_size} x {context:,} tokens of context"]
    lines += [f"  {label:<18} {_gib(n):>12}" for label, n in rows]
    return "\n".join(lines) + f"\nin {memory_gib:g} GiB: {verdict}"


# --------------------------------------------------------------------------------------------
# Training memory
# --------------------------------------------------------------------------------------------


def activation_values_per_token(args: ModelArgs | str, seq_len: int) -> int:
    """Values one token's forward pass keeps for the backward pass (an estimate, see below).

    Per block: the two norm inputs and outputs (4 d), q, k and v (d + 2 kv width), the attention
    output (d), one row of attention probabilities per head (n_heads * seq_len, none with a fused
    kernel), and in the feed-forward w1's and w3's outputs, SiLU's output and the product
    (4 hidden). After the blocks: the final norm's input and output (2 d) and the logits
    (vocab_size). PyTorch may keep more (copies) or less (fused kernels).
    """
    a = _args(args, "activation_values_per_token")
    seq_len = _count(seq_len, "seq_len", "activation_values_per_token", minimum=1)
    kv_width = a.kv_heads * a.head_dim
    block = 4 * a.dim + a.dim + 2 * kv_width + a.dim + a.n_heads * seq_len + 4 * a.hidden_dim
    return a.n_layers * block + 2 * a.dim + a.vocab_size


def train_memory_bytes(
    args: ModelArgs | str,
    batch_size: int = 1,
    seq_len: int | None = None,
    weight_dtype: str | float = "fp32",
    optimizer_bytes_per_param: float = 8,
    activation_dtype: str | float = "fp32",
) -> dict[str, float]:
    """Bytes to train with AdamW: weights, gradients, optimizer state, activations, and total.

    Gradients take the weights' precision; AdamW keeps two fp32 moments per weight (8 bytes,
    `optimizer_bytes_per_param`); the activations are `activation_values_per_token` for every
    token of the batch (seq_len defaults to args.max_seq_len).
    """
    fn = "train_memory_bytes"
    params = param_counts(args)["total"]
    a = _args(args, fn)
    seq = a.max_seq_len if seq_len is None else _count(seq_len, "seq_len", fn, minimum=1)
    tokens = _count(batch_size, "batch_size", fn, minimum=1) * seq
    if not is_number(optimizer_bytes_per_param) or float(optimizer_bytes_per_param) < 0:
        raise ValueError(f"{fn}: optimizer_bytes_per_param must be a number >= 0 (8 for AdamW's "
                         f"two fp32 moments, 0 for plain SGD), got {optimizer_bytes_per_param!r}")
    weight = _bytes(weight_dtype, "weight_dtype", fn)
    out = {
        "weights": params * weight,
        "gradients": params * weight,
        "optimizer": params * float(optimizer_bytes_per_param),
        "activations": tokens * activation_values_per_token(a, seq)
        * _bytes(activation_dtype, "activation_dtype", fn),
    }
    out["total"] = sum(out.values())
    return out


# --------------------------------------------------------------------------------------------
# Compute and data
# --------------------------------------------------------------------------------------------


def flops_per_token(args: ModelArgs | str, context: int = 0) -> int:
    """Forward FLOPs for one token that attends to `context` earlier positions (itself included).

    2 FLOPs (a multiply and an add) per weight of every matrix multiply (the embedding is a
    lookup, not a multiply; the norms are negligible), plus attention: q . k for each of the
    `context` keys and the weighted sum of as many values, 2 * 2 * n_heads * head_dim each, in
    every layer.
    """
    p = param_counts(args)
    a = _args(args, "flops_per_token")
    context = _count(context, "context", "flops_per_token")
    matmul = p["attention"] + p["feed_forward"] + (p["output"] or p["embeddings"])
    return 2 * matmul + 4 * a.n_layers * context * a.n_heads * a.head_dim


def training_flops(n_params: int, n_tokens: int) -> int:
    """The usual estimate of training compute: 6 N D (forward 2 N D, backward 4 N D)."""
    n = _count(n_params, "n_params", "training_flops")
    d = _count(n_tokens, "n_tokens", "training_flops")
    return 6 * n * d


def tokens_per_parameter(n_tokens: float, n_params: float) -> float:
    """Training tokens per parameter (Chinchilla-optimal: about 20)."""
    for name, value in (("n_tokens", n_tokens), ("n_params", n_params)):
        if not is_number(value) or float(value) <= 0:
            raise ValueError(f"tokens_per_parameter: {name} must be a number > 0, got {value!r}")
    return float(n_tokens) / float(n_params)
