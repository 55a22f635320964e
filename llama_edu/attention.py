"""Causal self-attention as Llama does it: RoPE on q and k, grouped-query heads, a KV cache."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import require_float, require_positive_int
from .rope import _rotate_pairs


def causal_mask(
    seq_len: int,
    start_pos: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Additive mask (seq_len, start_pos + seq_len): 0 where query i may see key j, else -inf.

    Query i sits at absolute position start_pos + i, so it may see keys 0 .. start_pos + i.
    """
    if (
        isinstance(seq_len, bool)
        or not isinstance(seq_len, int)
        or isinstance(start_pos, bool)
        or not isinstance(start_pos, int)
        or seq_len < 1
        or start_pos < 0
    ):
        raise ValueError(
            f"causal_mask needs an int seq_len >= 1 and an int start_pos >= 0, got "
            f"{seq_len!r}, {start_pos!r}."
        )
    query_pos = torch.arange(start_pos, start_pos + seq_len, device=device)[:, None]
    key_pos = torch.arange(start_pos + seq_len, device=device)[None, :]
    mask = torch.zeros(seq_len, start_pos + seq_len, dtype=dtype, device=device)
    return mask.masked_fill(key_pos > query_pos, float("-inf"))


def _check_qkv(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    fn: str = "attention",
) -> None:
    _check_same_float(fn, q=q, k=k, v=v)
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "attention expects q, k, v of shape (batch, n_heads, seq, head_dim); got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}."
        )
    if k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"attention: q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} do not fit. "
            "k and v must be equal in shape, and share batch, n_heads and head_dim with q "
            "(use repeat_kv first for grouped-query attention)."
        )
    _check_mask(mask, q.shape[2], k.shape[2])


def _is_plain_causal(mask: torch.Tensor | None, n_queries: int, n_keys: int) -> bool:
    """True when mask is exactly causal_mask(n_queries) (no cached keys before the queries)."""
    if mask is None or n_queries != n_keys or n_queries == 1 or mask.shape != (n_queries,) * 2:
        return False
    if torch.compiler.is_compiling():  # it cannot look at values: SDPA gets the mask itself
        return False
    return torch.equal(mask, _causal_reference(n_queries, mask.device, mask.dtype))


_CAUSAL: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}


def _causal_reference(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    key = (n, device, dtype)
    if key not in _CAUSAL:
        if len(_CAUSAL) > 64:
            _CAUSAL.clear()
        _CAUSAL[key] = causal_mask(n, device=device, dtype=dtype)
    return _CAUSAL[key]


def _check_same_float(fn: str, **tensors: torch.Tensor) -> None:
    for name, t in tensors.items():
        require_float(fn, name, t)
    dtypes = {name: t.dtype for name, t in tensors.items()}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{name} {dtype}" for name, dtype in dtypes.items())
        raise TypeError(
            f"{fn}: {listed}; they must share one dtype. Convert them, e.g. k.to(q.dtype)."
        )


def _check_mask(mask: torch.Tensor | None, n_queries: int, n_keys: int) -> None:
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or not mask.is_floating_point():
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(
            f"attention: the mask must be an additive float tensor (0 where a query may look, "
            f"-inf where it may not), got {got}; build it with causal_mask({n_queries}, "
            f"start_pos={n_keys - n_queries}), or turn a boolean keep-mask into one with "
            "torch.zeros(keep.shape).masked_fill(~keep, float('-inf'))."
        )
    if mask.shape[-2:] != (n_queries, n_keys):
        raise ValueError(
            f"attention: the mask has shape {tuple(mask.shape)} but the scores have shape "
            f"(..., {n_queries}, {n_keys}) (queries, keys); build it with "
            f"causal_mask({n_queries}, start_pos={n_keys - n_queries})."
        )


def attention_weights(
    q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim) + mask) in float32, shape (batch, n_heads, seq, kv_seq)."""
    _check_same_float("attention_weights", q=q, k=k)
    if q.dim() < 2 or k.dim() < 2 or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"attention_weights: q {tuple(q.shape)} and k {tuple(k.shape)} must both end in "
            "(seq, head_dim) with the same head_dim, e.g. (batch, n_heads, seq, head_dim)."
        )
    _check_mask(mask, q.shape[-2], k.shape[-2])
    scores = q.float() @ k.float().transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask.float()
    return torch.softmax(scores, dim=-1)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Scaled dot-product attention written out; q (b, h, s, d), k and v (b, h, kv, d)."""
    _check_qkv(q, k, v, mask)
    return attention_weights(q, k, mask).type_as(q) @ v


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The same computation through PyTorch's fused scaled_dot_product_attention."""
    _check_qkv(q, k, v, mask, "sdpa_attention")
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=None if mask is None else mask.to(q.dtype)
    )


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(b, seq, n_kv_heads, d) -> (b, seq, n_kv_heads * n_rep, d): each kv head n_rep times."""
    if isinstance(n_rep, bool) or not isinstance(n_rep, int) or n_rep < 1:
        raise ValueError(f"repeat_kv: n_rep must be an int >= 1, got {n_rep!r}.")
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"repeat_kv expects x of shape (batch, seq, n_kv_heads, head_dim), got {got}."
        )
    if n_rep == 1:
        return x
    batch, seq, n_kv_heads, head_dim = x.shape
    expanded = x[:, :, :, None, :].expand(batch, seq, n_kv_heads, n_rep, head_dim)
    return expanded.reshape(
        batch, seq, n_kv_heads * n_rep, head_dim
    )  # kv head j -> heads j*n_rep ...


class KVCache:
    """Keys and values of all earlier positions: (layers, batch, max_seq, kv_heads, head_dim)."""

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        max_seq_len: int,
        n_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        shape = (n_layers, batch_size, max_seq_len, n_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def batch_size(self) -> int:
        """How many sequences the cache holds."""
        return self.k.shape[1]

    @property
    def max_seq_len(self) -> int:
        """How many positions fit."""
        return self.k.shape[2]

    def store(
        self, layer: int, start_pos: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (batch, seq, kv_heads, head_dim) at start_pos; return all of them so far."""
        batch, seq = k.shape[:2]
        end = start_pos + seq
        self.k[layer, :batch, start_pos:end] = k
        self.v[layer, :batch, start_pos:end] = v
        return self.k[layer, :batch, :end], self.v[layer, :batch, :end]

    def memory_bytes(self) -> int:
        """Bytes taken by the cached keys and values."""
        return 2 * self.k.numel() * self.k.element_size()


class Attention(nn.Module):
    """Causal self-attention with RoPE and grouped-query heads (Meta's parameter names)."""

    def __init__(
        self, dim: int, n_heads: int, n_kv_heads: int | None = None, use_sdpa: bool = True
    ) -> None:
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        for name, value in (("dim", dim), ("n_heads", n_heads), ("n_kv_heads", n_kv_heads)):
            require_positive_int("Attention", name, value)
        if dim % n_heads or n_heads % n_kv_heads:
            raise ValueError(
                f"Attention: dim={dim} must be divisible by n_heads={n_heads}, and n_heads by "
                f"n_kv_heads={n_kv_heads}."
            )
        if (dim // n_heads) % 2:
            raise ValueError(
                f"Attention: head_dim = dim / n_heads = {dim // n_heads} is odd, but RoPE rotates "
                "pairs of features. Choose dim and n_heads so that dim // n_heads is even."
            )
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.n_rep = n_heads // n_kv_heads
        self.head_dim = dim // n_heads
        self.use_sdpa = use_sdpa
        self.wq = nn.Linear(dim, n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(n_heads * self.head_dim, dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        start_pos: int = 0,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend over x (batch, seq, dim); with return_weights also the weights (b, h, s, kv)."""
        self._check_input(x, cos, sin)
        batch, seq, _ = x.shape
        q = self.wq(x).view(batch, seq, self.n_heads, self.head_dim)  # (b, s, heads, d)
        k = self.wk(x).view(batch, seq, self.n_kv_heads, self.head_dim)  # (b, s, kv_heads, d)
        v = self.wv(x).view(batch, seq, self.n_kv_heads, self.head_dim)
        q, k = _rotate_pairs(q, cos, sin), _rotate_pairs(k, cos, sin)  # checked in _check_input
        if cache is not None:
            k, v = cache.store(layer, start_pos, k, v)  # now (b, start_pos + seq, kv_heads, d)
        weights = None
        if return_weights or not self.use_sdpa:
            k, v = repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep)  # (b, kv_seq, heads, d)
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (b, heads, s or kv_seq, d)
            _check_qkv(q, k, v, mask)
            weights = attention_weights(q, k, mask)  # (b, heads, s, kv_seq)
            out = weights.type_as(q) @ v
        else:
            _check_mask(mask, seq, k.shape[1])
            # The same numbers, two ways to get them faster: SDPA builds the plain causal mask
            # itself (is_causal) and skips the blocks it hides; and when training on the CPU,
            # copying each kv head n_rep times beats SDPA's own sharing of kv heads (enable_gqa),
            # while with a cache, sharing avoids copying the whole cache at every new token.
            is_causal = _is_plain_causal(mask, seq, k.shape[1])
            gqa = self.n_rep > 1 and (cache is not None or x.device.type != "cpu")
            if not gqa:
                k, v = repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep)  # (b, kv_seq, h, d)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (b, h, s, d)
            out = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=None if mask is None or is_causal else mask.to(q.dtype),
                is_causal=is_causal,
                enable_gqa=gqa,
            )  # (b, heads, s, d)
        out = self.wo(out.transpose(1, 2).reshape(batch, seq, -1))  # (b, s, heads * d)
        return (out, weights) if return_weights else out

    def _check_input(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
        """Shape and dtype checks only (no data is read), so they cost next to nothing."""
        weight = self.wq.weight
        fine = (  # the common case, decided cheaply; the checks below explain anything else
            isinstance(x, torch.Tensor)
            and isinstance(cos, torch.Tensor)
            and isinstance(sin, torch.Tensor)
            and x.dtype == weight.dtype
            and x.dim() == 3
            and x.shape[-1] == weight.shape[1]
            and cos.dtype == sin.dtype
            and cos.is_floating_point()
        )
        if fine:
            return
        require_float("Attention", "x", x)
        dim, weight_dtype = weight.shape[1], weight.dtype
        if x.dim() != 3 or x.shape[-1] != dim:
            raise ValueError(
                f"Attention expects x of shape (batch, seq, dim) = (batch, seq, {dim}), got "
                f"{tuple(x.shape)}. Use x[None] for a single sequence."
            )
        if x.dtype != weight_dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(
                f"Attention: x is {x.dtype} but the layer's weights are {weight_dtype}; they must "
                f"match. Convert x with x.to({weight_dtype}) or the layer with "
                f"layer.to({x.dtype})."
            )
        require_float("Attention", "cos", cos)
        require_float("Attention", "sin", sin)
        if cos.dtype != sin.dtype:
            raise TypeError(
                f"Attention: cos is {cos.dtype} but sin is {sin.dtype}; they must share one "
                "dtype. Make both with one call of rope_cos_sin."
            )


# --- switching heads off --------------------------------------------------------------------


@contextmanager
def ablate_heads(model: nn.Module, heads: Iterable[tuple[int, int]]) -> Iterator[None]:
    """Inside the with-block, the given (layer, head) pairs of `model` output zeros.

    A forward pre-hook on each chosen layer's `attention.wo` sets that head's slice of wo's
    input (the heads' outputs side by side, head h at features h*head_dim .. (h+1)*head_dim) to
    0, so the head adds nothing to the residual stream. The model's code and weights do not
    change; the hooks are removed when the block ends, also after an exception.
    """
    layers = getattr(model, "layers", None)
    if layers is None:
        raise TypeError(
            f"ablate_heads expects a Llama (a model with .layers), got {type(model).__name__}."
        )
    chosen: dict[int, set[int]] = {}
    for pair in heads:
        layer, head = (int(i) for i in pair)
        if not 0 <= layer < len(layers):
            raise ValueError(
                f"layer {layer} does not exist: the model has layers 0..{len(layers) - 1}."
            )
        n_heads = layers[layer].attention.n_heads
        if not 0 <= head < n_heads:
            raise ValueError(
                f"head {head} does not exist: layer {layer} has heads 0..{n_heads - 1}."
            )
        chosen.setdefault(layer, set()).add(head)

    def make_hook(attention: Attention, off: set[int]) -> Callable[..., tuple[torch.Tensor, ...]]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            x = args[0]
            per_head = x.unflatten(-1, (attention.n_heads, attention.head_dim))
            dead = torch.zeros(attention.n_heads, 1, dtype=torch.bool, device=x.device)
            dead[sorted(off)] = True
            return (per_head.masked_fill(dead, 0.0).flatten(-2), *args[1:])

        return hook

    handles = []
    try:
        for layer, off in sorted(chosen.items()):
            attention = layers[layer].attention
            handles.append(attention.wo.register_forward_pre_hook(make_hook(attention, off)))
        yield
    finally:
        for handle in handles:
            handle.remove()
