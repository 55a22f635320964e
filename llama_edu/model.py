"""The complete Llama decoder, in the spirit of Meta's reference `model.py`.

Parameter names follow Meta's checkpoints (tok_embeddings, layers.{i}.attention.wq, ...), so a
state dict moves to and from Meta's and Hugging Face's formats with `llama_edu.interop`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._validate import is_number
from .attention import Attention, KVCache, causal_mask
from .ffn import FeedForward, MLPFeedForward, ffn_hidden_dim
from .norm import LayerNorm, RMSNorm
from .rope import _check_llama3_scaling, rope_cos_sin, sinusoidal_positions

LLAMA31_SCALING = {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


@dataclass(kw_only=True)
class ModelArgs:
    """Shape and hyper-parameters of a Llama; the names are those of Meta's params.json."""

    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int | None = None
    vocab_size: int
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    max_seq_len: int = 2048
    tie_embeddings: bool = False
    # switches for the ablation lab (chapter 12); the defaults are Llama
    norm_position: str = "pre"  # "pre": x + f(norm(x)); "post": norm(x + f(x)); "none"
    norm_type: str = "rmsnorm"  # or "layernorm"
    ffn_type: str = "swiglu"  # or "relu" / "gelu": two matrices, 3/2 as wide (same parameters)
    pos_encoding: str = "rope"  # or "learned" / "sinusoidal" (added to the input), "none"

    def __post_init__(self) -> None:
        for name in ("dim", "n_layers", "n_heads", "vocab_size", "multiple_of", "max_seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelArgs.{name} must be a positive int, got {value!r}.")
        if self.n_kv_heads is not None and (
            isinstance(self.n_kv_heads, bool)
            or not isinstance(self.n_kv_heads, int)
            or self.n_kv_heads < 1
        ):
            raise ValueError(
                f"ModelArgs.n_kv_heads must be a positive int that divides n_heads={self.n_heads} "
                f"(or None for one key/value head per query head), got {self.n_kv_heads!r}."
            )
        if not (is_number(self.rope_theta) and 0 < float(self.rope_theta) < math.inf):
            raise ValueError(
                f"ModelArgs.rope_theta must be a finite number > 0, got {self.rope_theta!r}; "
                "Llama 1 and 2 use 10000.0, Llama 3 uses 500000.0."
            )
        if not (is_number(self.norm_eps) and 0 <= float(self.norm_eps) < math.inf):
            raise ValueError(
                f"ModelArgs.norm_eps must be a finite number >= 0, got {self.norm_eps!r}; "
                "Llama uses 1e-5 or 1e-6."
            )
        if self.ffn_dim_multiplier is not None and not (
            is_number(self.ffn_dim_multiplier) and 0 < float(self.ffn_dim_multiplier) < math.inf
        ):
            raise ValueError(
                "ModelArgs.ffn_dim_multiplier must be a finite number > 0 (or None), got "
                f"{self.ffn_dim_multiplier!r}; Llama 3 uses 1.3."
            )
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(
                f"ModelArgs.tie_embeddings must be True or False, got {self.tie_embeddings!r}."
            )
        for name, allowed in SWITCHES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"ModelArgs.{name} must be one of {', '.join(map(repr, allowed))}, got "
                    f"{getattr(self, name)!r}; the first one is Llama's."
                )
        if self.rope_scaling is not None:
            _check_llama3_scaling(self.rope_scaling)
        if self.dim % self.n_heads:
            raise ValueError(
                f"dim={self.dim} is not divisible by n_heads={self.n_heads}: every head needs "
                "the same width. Change dim or n_heads."
            )
        if self.n_heads % self.kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}: each "
                "key/value head must serve the same number of query heads."
            )
        if self.head_dim % 2:
            raise ValueError(
                f"head_dim = dim / n_heads = {self.head_dim} is odd, but RoPE rotates pairs of "
                "features. Choose dim and n_heads so that dim // n_heads is even."
            )

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads (n_heads when n_kv_heads is None)."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.dim // self.n_heads

    @property
    def hidden_dim(self) -> int:
        """Width of the feed-forward hidden layer (SwiGLU's; 3/2 of it for a two-matrix MLP)."""
        hidden = ffn_hidden_dim(self.dim, self.multiple_of, self.ffn_dim_multiplier)
        return hidden if self.ffn_type == "swiglu" else hidden * 3 // 2

    @property
    def is_llama(self) -> bool:
        """True when every ablation switch has Llama's value (the model transformers can load)."""
        return all(getattr(self, name) == allowed[0] for name, allowed in SWITCHES.items())

    def changed_switches(self) -> dict[str, str]:
        """The ablation switches that differ from Llama's, with their values."""
        return {
            name: getattr(self, name)
            for name, allowed in SWITCHES.items()
            if getattr(self, name) != allowed[0]
        }

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> ModelArgs:
        """A named preset (see PRESETS), optionally with some fields changed."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
        return dataclasses.replace(PRESETS[name], **overrides)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)


SWITCHES: dict[str, tuple[str, ...]] = {  # the first value of each is Llama's
    "norm_position": ("pre", "post", "none"),
    "norm_type": ("rmsnorm", "layernorm"),
    "ffn_type": ("swiglu", "relu", "gelu"),
    "pos_encoding": ("rope", "learned", "sinusoidal", "none"),
}

PRESETS: dict[str, ModelArgs] = {
    "tiny": ModelArgs(
        dim=128,
        n_layers=4,
        n_heads=4,
        n_kv_heads=2,
        vocab_size=512,
        multiple_of=32,
        max_seq_len=256,
    ),
    "llama-7b": ModelArgs(dim=4096, n_layers=32, n_heads=32, vocab_size=32000, norm_eps=1e-6),
    "llama2-7b": ModelArgs(dim=4096, n_layers=32, n_heads=32, vocab_size=32000, max_seq_len=4096),
    "llama2-13b": ModelArgs(dim=5120, n_layers=40, n_heads=40, vocab_size=32000, max_seq_len=4096),
    "llama2-70b": ModelArgs(
        dim=8192,
        n_layers=80,
        n_heads=64,
        n_kv_heads=8,
        vocab_size=32000,
        multiple_of=4096,
        ffn_dim_multiplier=1.3,
        max_seq_len=4096,
    ),
    "llama3-8b": ModelArgs(
        dim=4096,
        n_layers=32,
        n_heads=32,
        n_kv_heads=8,
        vocab_size=128256,
        multiple_of=1024,
        ffn_dim_multiplier=1.3,
        rope_theta=500000.0,
        max_seq_len=8192,
    ),
    "llama3.1-8b": ModelArgs(
        dim=4096,
        n_layers=32,
        n_heads=32,
        n_kv_heads=8,
        vocab_size=128256,
        multiple_of=1024,
        ffn_dim_multiplier=1.3,
        rope_theta=500000.0,
        rope_scaling=LLAMA31_SCALING,
        max_seq_len=131072,
    ),
    "llama3.2-1b": ModelArgs(
        dim=2048,
        n_layers=16,
        n_heads=32,
        n_kv_heads=8,
        vocab_size=128256,
        multiple_of=256,
        ffn_dim_multiplier=1.5,
        rope_theta=500000.0,
        rope_scaling={**LLAMA31_SCALING, "factor": 32.0},
        max_seq_len=131072,
        tie_embeddings=True,
    ),
}


def make_norm(args: ModelArgs) -> nn.Module:
    """The normalisation layer that args asks for (nn.Identity when norm_position is "none")."""
    if args.norm_position == "none":
        return nn.Identity()
    if args.norm_type == "layernorm":
        return LayerNorm(args.dim, eps=args.norm_eps)
    return RMSNorm(args.dim, eps=args.norm_eps)


class TransformerBlock(nn.Module):
    """One pre-norm residual block: x + attention(norm(x)), then h + feed_forward(norm(h)).

    With args.norm_position == "post" it is the original Transformer's block instead,
    norm(x + attention(x)) then norm(h + feed_forward(h)); with "none" there is no norm.
    """

    def __init__(self, layer_id: int, args: ModelArgs) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.post_norm = args.norm_position == "post"
        self.attention = Attention(args.dim, args.n_heads, args.kv_heads)
        if args.ffn_type == "swiglu":
            self.feed_forward: nn.Module = FeedForward(args.dim, args.hidden_dim)
        else:
            self.feed_forward = MLPFeedForward(args.dim, args.hidden_dim, args.ffn_type)
        self.attention_norm = make_norm(args)
        self.ffn_norm = make_norm(args)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
        start_pos: int = 0,
        return_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the block's output (batch, seq, dim) and, on request, its attention weights."""
        attended = self.attention(
            x if self.post_norm else self.attention_norm(x),
            cos,
            sin,
            mask,
            cache,
            self.layer_id,
            start_pos,
            return_weights=return_weights,
        )
        attended, weights = attended if return_weights else (attended, None)
        if self.post_norm:
            h = self.attention_norm(x + attended)
            return self.ffn_norm(h + self.feed_forward(h)), weights
        h = x + attended
        return h + self.feed_forward(self.ffn_norm(h)), weights


@dataclass
class Trace:
    """Everything a forward pass computed, for looking inside the model."""

    logits: torch.Tensor
    hidden_states: list[torch.Tensor] = field(
        default_factory=list
    )  # input to each block, then the final output
    attentions: list[torch.Tensor] = field(
        default_factory=list
    )  # (batch, heads, seq, kv_seq) per layer


class Llama(nn.Module):
    """A decoder-only Llama: embeddings, n_layers blocks, a final RMSNorm and the output layer."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        if args.pos_encoding == "learned":
            self.pos_embeddings = nn.Embedding(args.max_seq_len, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(i, args) for i in range(args.n_layers))
        # a post-norm block already ends in a norm, so only pre-norm needs a final one
        self.norm = make_norm(args) if args.norm_position == "pre" else nn.Identity()
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        cos, sin = rope_cos_sin(
            args.head_dim, args.max_seq_len, args.rope_theta, scaling=args.rope_scaling
        )
        if args.pos_encoding != "rope":  # angle 0 everywhere: attention rotates nothing
            cos, sin = torch.ones_like(cos), torch.zeros_like(sin)
        self.register_buffer("rope_cos", cos, persistent=False)  # (max_seq_len, head_dim / 2)
        self.register_buffer("rope_sin", sin, persistent=False)
        if args.pos_encoding == "sinusoidal":
            # scaled to the embeddings' initial size (std 0.02), so neither drowns the other
            table = sinusoidal_positions(args.max_seq_len, args.dim) * (0.02 * math.sqrt(2))
            self.register_buffer("pos_table", table, persistent=False)  # (max_seq_len, dim)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def init_cache(
        self, batch_size: int, max_seq_len: int | None = None, dtype: torch.dtype | None = None
    ) -> KVCache:
        """An empty KV cache for up to batch_size sequences of up to max_seq_len tokens."""
        max_seq_len = self.args.max_seq_len if max_seq_len is None else max_seq_len
        if max_seq_len > self.args.max_seq_len:
            raise ValueError(
                f"a cache of {max_seq_len} positions exceeds the model's max_seq_len "
                f"{self.args.max_seq_len}."
            )
        weight = self.tok_embeddings.weight
        return KVCache(
            self.args.n_layers,
            batch_size,
            max_seq_len,
            self.args.kv_heads,
            self.args.head_dim,
            dtype or weight.dtype,
            weight.device,
        )

    def _validate(self, tokens: torch.Tensor, cache: KVCache | None) -> int:
        if tokens.dim() != 2 or tokens.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"tokens must be an integer tensor of shape (batch, seq); got shape "
                f"{tuple(tokens.shape)} and dtype {tokens.dtype}. Use tokens[None] for one row."
            )
        bad = (tokens < 0) | (tokens >= self.args.vocab_size)
        # torch.compile cannot branch on the tokens' values, so a compiled model skips this check
        if not torch.compiler.is_compiling() and bad.any():
            row, col = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"token id {int(tokens[row, col])} at (batch {row}, position {col}) is outside the "
                f"vocabulary 0..{self.args.vocab_size - 1}. Was the text encoded with another "
                "tokenizer?"
            )
        batch, seq = tokens.shape
        start_pos = 0 if cache is None else cache.length
        limit = self.args.max_seq_len if cache is None else cache.max_seq_len
        if cache is not None and batch > cache.batch_size:
            raise ValueError(
                f"a batch of {batch} sequences does not fit a cache made for "
                f"{cache.batch_size}; call model.init_cache({batch}, ...)."
            )
        if start_pos + seq > limit:
            what = "the cache" if cache is not None else "max_seq_len"
            raise ValueError(
                f"positions {start_pos}..{start_pos + seq - 1} do not fit: {what} holds {limit} "
                "positions. Use a shorter input, or a new cache."
            )
        return start_pos

    def trace(
        self, tokens: torch.Tensor, cache: KVCache | None = None, return_attention: bool = False
    ) -> Trace:
        """Run the model and keep the residual stream after every block (and attention weights)."""
        start_pos = self._validate(tokens, cache)
        seq = tokens.shape[1]
        cos = self.rope_cos[start_pos : start_pos + seq]  # (seq, head_dim / 2)
        sin = self.rope_sin[start_pos : start_pos + seq]
        # one new token may see every cached key, so it needs no mask
        mask = None if seq == 1 else causal_mask(seq, start_pos, tokens.device)
        h = self.tok_embeddings(tokens)  # (batch, seq, dim)
        if self.args.pos_encoding == "learned":
            h = h + self.pos_embeddings.weight[start_pos : start_pos + seq]  # (seq, dim) broadcast
        elif self.args.pos_encoding == "sinusoidal":
            h = h + self.pos_table[start_pos : start_pos + seq].to(h.dtype)
        trace = Trace(logits=torch.empty(0))
        for layer in self.layers:
            trace.hidden_states.append(h)
            h, weights = layer(h, cos, sin, mask, cache, start_pos, return_attention)
            if weights is not None:
                trace.attentions.append(weights)
        trace.hidden_states.append(h)
        if cache is not None:
            cache.length = start_pos + seq
        trace.logits = self.output(self.norm(h)).float()  # (batch, seq, vocab_size)
        return trace

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Float32 logits (batch, seq, vocab_size) at every position; extends `cache` if given."""
        return self.trace(tokens, cache).logits

    def num_params(self, breakdown: bool = False) -> int | dict[str, int]:
        """Count parameters once each (tied embeddings count once); optionally by component."""
        if not breakdown:
            return sum(p.numel() for p in self.parameters())
        def size(*modules: nn.Module) -> int:
            return sum(p.numel() for m in modules for p in m.parameters())

        parts = {
            "embeddings": self.tok_embeddings.weight.numel(),
            "attention": 0,
            "feed_forward": 0,
            "norms": size(self.norm),
            "output": 0 if self.args.tie_embeddings else self.output.weight.numel(),
        }
        if self.args.pos_encoding == "learned":
            parts["embeddings"] += self.pos_embeddings.weight.numel()
        for layer in self.layers:
            parts["attention"] += size(layer.attention)
            parts["feed_forward"] += size(layer.feed_forward)
            parts["norms"] += size(layer.attention_norm, layer.ffn_norm)
        parts["total"] = sum(parts.values())
        return parts


def count_params(args: ModelArgs | str, breakdown: bool = False) -> int | dict[str, int]:
    """Parameter count of a configuration, built on the meta device (no memory is allocated)."""
    args = ModelArgs.from_name(args) if isinstance(args, str) else args
    with torch.device("meta"):
        model = Llama(args)
    return model.num_params(breakdown)
