"""Looking inside a trained model with measurements whose answer can be checked.

Finding words among tokens (token_char_spans, find_name_mentions), copy scores of heads, the
logit lens, PCA of word vectors; and three methods from circuit analysis: induction scores on
repeated random tokens, direct logit attribution (the final residual stream split into the
parts that the embedding, every head and every feed-forward layer wrote), and activation
patching of one head's output from a clean run into a corrupted one.

The model's code is not changed: the parts are read, and patches are written, by forward hooks
that are removed again when the function returns. Chapter 11 uses all of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

SPACE_MARK = "\u2581"  # SentencePiece's mark for a space, used in token labels


class DecodingTokenizer(Protocol):
    """What the chapter-10 helpers need from a tokenizer (SentencePieceTokenizer has it all)."""

    def encode(self, s: str, bos: bool = False, eos: bool = False) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def token_text(self, token_id: int) -> str: ...


def token_char_spans(tokenizer: DecodingTokenizer, ids: Sequence[int]) -> list[tuple[int, int]]:
    """The characters each token adds to tokenizer.decode(ids), as (start, end) per token.

    It decodes ids[:1], ids[:2], ... and keeps the part that each token adds. So it works
    whether a word is one token or several pieces; a control token such as <s> gets an empty
    span, and a piece with a leading space covers that space too.
    """
    spans: list[tuple[int, int]] = []
    before = ""
    for i in range(len(ids)):
        text = tokenizer.decode(list(ids[: i + 1]))
        if not text.startswith(before):
            raise ValueError(
                f"decoding one more token (position {i}) changed the text before it "
                f"({before[-20:]!r} -> {text[-20:]!r}); this happens when one character is "
                "split over several byte tokens. Use text whose characters are whole tokens."
            )
        spans.append((len(before), len(text)))
        before = text
    return spans


@dataclass(frozen=True)
class NameMentions:
    """A story as model input, and the token positions where its names occur."""

    text: str
    tokens: list[int]  # the input ids, with <s> first when built with bos=True
    labels: list[str]  # each token's text for plot axes, a space shown as ▁
    first: dict[str, list[int]]  # name -> token positions of its first mention
    later: list[tuple[str, list[int]]]  # (name, token positions) of every later mention


def find_name_mentions(
    tokenizer: DecodingTokenizer, text: str, names: Sequence[str], bos: bool = True
) -> NameMentions:
    """Tokenize `text` and find every mention of the given names, as token positions.

    A name may be one token or several pieces: every token whose characters overlap the name
    belongs to the mention. The first mention of a name is where the story introduces it; each
    later mention is a place where the model has to copy the name from earlier in the text.
    """
    words = sorted({str(n) for n in names}, key=len, reverse=True)
    if not words:
        raise ValueError("find_name_mentions needs at least one name to look for.")
    ids = tokenizer.encode(text, bos=bos)
    spans = token_char_spans(tokenizer, ids)
    decoded = tokenizer.decode(ids)
    if decoded != text:
        raise ValueError(
            f"the tokens do not decode back to the text ({decoded[:40]!r}... vs "
            f"{text[:40]!r}...), so character positions would not match. Strip extra spaces "
            "or use a tokenizer that keeps the text unchanged."
        )
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b")
    first: dict[str, list[int]] = {}
    later: list[tuple[str, list[int]]] = []
    for match in pattern.finditer(text):
        where = [i for i, (a, b) in enumerate(spans) if a < match.end() and b > match.start()]
        name = match.group()
        if name in first:
            later.append((name, where))
        else:
            first[name] = where
    labels = [tokenizer.token_text(i).replace(" ", SPACE_MARK) for i in ids]
    return NameMentions(text, list(ids), labels, first, later)


def stack_tokens(stories: Sequence[NameMentions], pad_id: int = 0) -> torch.Tensor:
    """The stories' tokens as one batch (stories, longest), padded with pad_id at the end.

    The padding comes after each story, and the mask is causal, so no real token sees it.
    """
    if not stories:
        raise ValueError("stack_tokens needs at least one story.")
    width = max(len(s.tokens) for s in stories)
    batch = torch.full((len(stories), width), pad_id, dtype=torch.long)
    for row, story in enumerate(stories):
        batch[row, : len(story.tokens)] = torch.tensor(story.tokens)
    return batch


def copy_target_masks(
    stories: Sequence[NameMentions], width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which next-token predictions copy a name: masks (copy, other), bool (stories, width - 1).

    The logits at position t predict token t + 1. copy[j, t] is True when token t + 1 of story
    j belongs to a later mention of a name; other[j, t] is True for every other real token.
    """
    copy = torch.zeros(len(stories), width - 1, dtype=torch.bool)
    real = torch.zeros_like(copy)
    for row, story in enumerate(stories):
        if len(story.tokens) > width:
            raise ValueError(
                f"story {row} has {len(story.tokens)} tokens, more than width={width}."
            )
        real[row, : len(story.tokens) - 1] = True
        for _, positions in story.later:
            for p in positions:
                copy[row, p - 1] = True
    return copy, real & ~copy


def copy_score(weights: torch.Tensor, first: Sequence[int], later_start: int) -> torch.Tensor:
    """The attention weight that the query just before a later mention puts on the first one.

    weights: (..., queries, keys), e.g. (layers, heads, seq, seq) for one story. first: the key
    positions of the name's first mention. later_start: the position of the first token of a
    later mention. The query is later_start - 1: its output must predict the name. The result,
    of shape (...), is the sum of that query's weights over the first mention's tokens.
    """
    keys = [int(k) for k in first]
    if not keys:
        raise ValueError("copy_score: `first` is empty; give the positions of the first mention.")
    if not 1 <= later_start < weights.shape[-2] + 1:
        raise ValueError(
            f"later_start={later_start} must be in 1..{weights.shape[-2]}: the query "
            "later_start - 1 must be a position of the weights."
        )
    if max(keys) >= later_start or min(keys) < 0:
        raise ValueError(
            f"the first mention {keys} must lie before the later mention at {later_start}."
        )
    return weights[..., later_start - 1, keys].sum(dim=-1)


def copy_head_scores(
    attentions: Sequence[torch.Tensor], stories: Sequence[NameMentions]
) -> torch.Tensor:
    """Mean copy_score of every (layer, head) over all later mentions: shape (layers, heads).

    attentions: one tensor (stories, heads, queries, keys) per layer, as returned by
    `Llama.trace(stack_tokens(stories), return_attention=True).attentions`; row j is story j.
    """
    n_layers = len(attentions)
    if n_layers == 0:
        raise ValueError("copy_head_scores needs the attention weights of at least one layer.")
    if attentions[0].shape[0] != len(stories):
        raise ValueError(
            f"the attention weights hold {attentions[0].shape[0]} rows but {len(stories)} "
            "stories were given; row j must be story j."
        )
    total = torch.zeros(n_layers, attentions[0].shape[1], dtype=torch.float64)
    count = 0
    for row, story in enumerate(stories):
        for name, positions in story.later:
            for layer, weights in enumerate(attentions):
                total[layer] += copy_score(weights[row].detach(), story.first[name], positions[0])
            count += 1
    if count == 0:
        raise ValueError("no story mentions a name twice, so there is nothing to copy.")
    return (total / count).float()


def logit_lens(hidden: torch.Tensor, norm: nn.Module, output: nn.Module) -> torch.Tensor:
    """Decode a residual stream (..., dim) as if it were the last one: output(norm(hidden)).

    `norm` is the model's final RMSNorm and `output` its output layer. For the residual stream
    after the last block this is exactly the model's logits; for earlier ones it shows what
    the model "would say" if it stopped there. Returns float32 logits (..., vocab_size).
    """
    return output(norm(hidden)).float()


def pca_2d(x: torch.Tensor) -> torch.Tensor:
    """Project the rows of x (N, D) onto their first two principal components: shape (N, 2).

    Centre each column (subtract the mean row), take the SVD x - mean = U S V^T and return
    (x - mean) @ V[:, :2], which equals U[:, :2] * S[:2]. The sign of a component is arbitrary;
    here each direction is turned so that its largest entry (in absolute value) is positive.
    """
    if x.dim() != 2 or min(x.shape) < 2:
        raise ValueError(f"pca_2d expects a matrix (N, D) with N, D >= 2, got {tuple(x.shape)}.")
    centred = x.detach().double() - x.detach().double().mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    directions = vh[:2].T  # (D, 2)
    biggest = directions.abs().argmax(dim=0)
    signs = torch.sign(directions[biggest, torch.arange(2)])
    return (centred @ (directions * signs)).to(x.dtype)


def word_vectors(
    table: torch.Tensor, tokenizer: DecodingTokenizer, words: Sequence[str], how: str = "mean"
) -> torch.Tensor:
    """One vector per word from an embedding table (vocab, dim): shape (len(words), dim).

    A word may be one token or several pieces. how="mean" averages the rows of its pieces,
    how="first" takes its first piece. A piece that is only a space mark (▁) is left out.
    """
    if how not in ("mean", "first"):
        raise ValueError(f'how must be "mean" or "first", got {how!r}.')
    rows = []
    for word in words:
        ids = [i for i in tokenizer.encode(word) if tokenizer.token_text(i).strip()]
        if not ids:
            raise ValueError(f"{word!r} has no visible token.")
        rows.append(table[ids].mean(dim=0) if how == "mean" else table[ids[0]])
    return torch.stack(rows).detach()



# --- induction heads: repeated random tokens --------------------------------------------------


def _positive_int(fn: str, name: str, value: object, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{fn}: {name} must be an int >= {least}, got {value!r}.")
    return value


def _block_length(fn: str, length: object) -> int:
    if isinstance(length, bool) or not isinstance(length, int) or length < 3:
        raise ValueError(
            f"{fn}: length must be an int >= 3, got {length!r}. With a block of 2 tokens the "
            "token after the earlier occurrence is the previous token, so an induction head "
            "and a previous-token head could not be told apart."
        )
    return length


def repeated_tokens(
    n: int,
    length: int,
    token_ids: Sequence[int],
    bos_id: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """n rows [bos, block, block]: a random block of `length` tokens, then the same block again.

    Each block holds `length` different ids drawn from token_ids, so every token of the second
    repeat has exactly one earlier occurrence. Shape (n, 1 + 2 * length), dtype long.
    """
    _positive_int("repeated_tokens", "n", n)
    _block_length("repeated_tokens", length)
    pool = torch.as_tensor(list(token_ids), dtype=torch.long)
    if pool.dim() != 1 or len(pool) < length or len(set(pool.tolist())) != len(pool):
        raise ValueError(
            f"repeated_tokens: token_ids must hold at least length={length} different ids, got "
            f"{len(pool)} ids ({len(set(pool.tolist()))} different). Pass the ids to draw from, "
            "e.g. every id that is not a control token."
        )
    rows = [pool[torch.randperm(len(pool), generator=generator)[:length]] for _ in range(n)]
    blocks = torch.stack(rows)
    bos = torch.full((n, 1), int(bos_id), dtype=torch.long)
    return torch.cat([bos, blocks, blocks], dim=1)


def _check_repeat_weights(fn: str, weights: torch.Tensor, length: int) -> None:
    seq = 1 + 2 * length
    if not isinstance(weights, torch.Tensor) or weights.dim() < 2:
        raise ValueError(f"{fn}: weights must be a tensor (..., queries, keys).")
    if tuple(weights.shape[-2:]) != (seq, seq):
        raise ValueError(
            f"{fn}: weights end in {tuple(weights.shape[-2:])} but rows [bos, block, block] "
            f"with length={length} have {seq} tokens: expected (..., {seq}, {seq})."
        )


def induction_score(weights: torch.Tensor, length: int) -> torch.Tensor:
    """Mean weight that a token of the second repeat puts on the token after its earlier copy.

    weights (..., seq, seq) of rows [bos, block, block], seq = 1 + 2 * length. Token i of the
    second repeat sits at q = 1 + length + i; its earlier occurrence is at q - length, and an
    induction head attends to the token after it, q - length + 1. The mean runs over the
    `length` queries of the second repeat; the result has shape (...).
    """
    _block_length("induction_score", length)
    _check_repeat_weights("induction_score", weights, length)
    queries = torch.arange(1 + length, 1 + 2 * length, device=weights.device)
    return weights[..., queries, queries - length + 1].mean(dim=-1)


def previous_token_score(weights: torch.Tensor, length: int) -> torch.Tensor:
    """The same queries as induction_score, but the weight on the previous token, q - 1."""
    _block_length("previous_token_score", length)
    _check_repeat_weights("previous_token_score", weights, length)
    queries = torch.arange(1 + length, 1 + 2 * length, device=weights.device)
    return weights[..., queries, queries - 1].mean(dim=-1)


def induction_head_scores(attentions: Sequence[torch.Tensor], length: int) -> torch.Tensor:
    """induction_score of every (layer, head), averaged over the rows: shape (layers, heads).

    attentions: one tensor (rows, heads, seq, seq) per layer, e.g.
    `model.trace(repeated_tokens(...), return_attention=True).attentions`.
    """
    if not attentions:
        raise ValueError("induction_head_scores needs the attention weights of at least one layer.")
    return torch.stack(
        [induction_score(w.detach().float(), length).mean(dim=0) for w in attentions]
    )


def repeat_losses(
    logits: torch.Tensor, tokens: torch.Tensor, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss (nats) on each token of the first and of the second repeat: two (length,).

    logits (rows, seq, vocab) for tokens (rows, 1 + 2 * length) laid out [bos, block, block].
    Entry i of the first tensor is the loss of predicting token i of the first block (position
    1 + i) from the tokens before it; entry i of the second, token i of the second block
    (position 1 + length + i). Both are averaged over the rows.
    """
    _block_length("repeat_losses", length)
    seq = 1 + 2 * length
    if tokens.dim() != 2 or tokens.shape[1] != seq:
        raise ValueError(
            f"repeat_losses: tokens must have shape (rows, {seq}) for length={length}, got "
            f"{tuple(tokens.shape)}."
        )
    if logits.dim() != 3 or logits.shape[:2] != tokens.shape:
        raise ValueError(
            f"repeat_losses: logits must have shape (rows, {seq}, vocab) to match the tokens, "
            f"got {tuple(logits.shape)}."
        )
    losses = F.cross_entropy(  # entry t: the loss of predicting token t + 1
        logits[:, :-1].float().transpose(1, 2), tokens[:, 1:], reduction="none"
    ).mean(dim=0)
    return losses[:length], losses[length:]


# --- direct logit attribution -----------------------------------------------------------------


def _parts_of(model: nn.Module, fn: str) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """The model's embedding, blocks, final norm and output layer, or a clear error."""
    names = ("tok_embeddings", "layers", "norm", "output")
    missing = [n for n in names if not hasattr(model, n)]
    if missing:
        raise TypeError(
            f"{fn} expects a Llama (with {', '.join(names)}); {type(model).__name__} has no "
            f"{', '.join(missing)}."
        )
    return tuple(getattr(model, n) for n in names)  # type: ignore[return-value]


@dataclass(frozen=True)
class ResidualParts:
    """The final residual stream of a run, split into what each part of the model wrote there.

    final = embedding + heads.sum((0, 1)) + feed_forward.sum(0) (in a pre-norm Llama).
    """

    embedding: torch.Tensor  # (batch, seq, dim): the token embeddings
    heads: torch.Tensor  # (layers, heads, batch, seq, dim): head h's output times its part of wo
    feed_forward: torch.Tensor  # (layers, batch, seq, dim)
    final: torch.Tensor  # (batch, seq, dim): the input of the final norm
    logits: torch.Tensor  # (batch, seq, vocab), float32


def residual_parts(model: nn.Module, tokens: torch.Tensor) -> ResidualParts:
    """Run the model once and keep every part that adds to the residual stream (forward hooks).

    Head h of a layer adds wo[:, h*d:(h+1)*d] @ o_h, where o_h is its slice of the input of
    `attention.wo`. Raises ValueError when the parts do not add up to the final stream (a
    model that is not pre-norm, or that adds something else, such as position vectors).
    """
    embed, layers, norm, _ = _parts_of(model, "residual_parts")
    seen: dict[str, list[torch.Tensor]] = {"embedding": [], "wo_in": [], "ffn": [], "final": []}

    def keep_output(key: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            seen[key].append(out.detach())
        return hook

    def keep_input(key: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            seen[key].append(args[0].detach())
        return hook

    handles = [embed.register_forward_hook(keep_output("embedding")),
               norm.register_forward_pre_hook(keep_input("final"))]
    for layer in layers:
        handles.append(layer.attention.wo.register_forward_pre_hook(keep_input("wo_in")))
        handles.append(layer.feed_forward.register_forward_hook(keep_output("ffn")))
    try:
        with torch.no_grad():
            logits = model(tokens).float()
    finally:
        for handle in handles:
            handle.remove()
    heads = []
    for layer, wo_in in zip(layers, seen["wo_in"], strict=True):
        attention = layer.attention
        n_heads, head_dim = attention.n_heads, attention.head_dim
        per_head = wo_in.float().unflatten(-1, (n_heads, head_dim))  # (b, s, heads, d)
        weight = attention.wo.weight.detach().float().unflatten(1, (n_heads, head_dim))
        heads.append(torch.einsum("bshd,ehd->hbse", per_head, weight))  # (heads, b, s, dim)
    parts = ResidualParts(
        embedding=seen["embedding"][0].float(),
        heads=torch.stack(heads),
        feed_forward=torch.stack([f.float() for f in seen["ffn"]]),
        final=seen["final"][0].float(),
        logits=logits,
    )
    total = parts.embedding + parts.heads.sum(dim=(0, 1)) + parts.feed_forward.sum(dim=0)
    scale = parts.final.abs().max().clamp_min(1.0)
    if not torch.allclose(total, parts.final, atol=1e-4 * float(scale), rtol=1e-4):
        raise ValueError(
            "residual_parts: the embedding, heads and feed-forward outputs do not add up to the "
            f"final residual stream (largest difference {(total - parts.final).abs().max():.3g}). "
            "This works for a pre-norm Llama only, where each block adds its outputs to the "
            "stream; a post-norm block or added position vectors break the sum."
        )
    return parts


@dataclass(frozen=True)
class LogitAttribution:
    """How much each part of the model adds to one logit (or logit difference) per row."""

    embedding: torch.Tensor  # (batch,)
    heads: torch.Tensor  # (layers, heads, batch)
    feed_forward: torch.Tensor  # (layers, batch)
    total: torch.Tensor  # (batch,): the model's own logit (difference)

    def parts_sum(self) -> torch.Tensor:
        """embedding + every head + every feed-forward layer: equals `total`."""
        return self.embedding + self.heads.sum(dim=(0, 1)) + self.feed_forward.sum(dim=0)


def _per_row(name: str, value: int | Sequence[int] | torch.Tensor, batch: int) -> torch.Tensor:
    out = torch.as_tensor(value, dtype=torch.long)
    if out.dim() == 0:
        out = out.expand(batch)
    if out.shape != (batch,):
        raise ValueError(f"{name} must be one int or one per row ({batch}), got shape "
                         f"{tuple(out.shape)}.")
    return out


def logit_attribution(
    model: nn.Module,
    parts: ResidualParts,
    positions: int | Sequence[int] | torch.Tensor,
    targets: int | Sequence[int] | torch.Tensor,
    others: int | Sequence[int] | torch.Tensor | None = None,
) -> LogitAttribution:
    """Direct logit attribution: each part's share of logit[target] (minus logit[other]).

    At each row's position, the final RMSNorm multiplies the stream h by weight / rms(h). With
    that scale frozen (computed from the whole h), the norm is a linear map, so the logit is a
    sum over the parts: (W_out[target] - W_out[other]) . (scale * part). The parts add up to
    the model's logit (difference) exactly, up to rounding.
    """
    _, _, norm, output = _parts_of(model, "logit_attribution")
    eps = getattr(norm, "eps", None)
    if eps is None or not hasattr(norm, "weight") or getattr(norm, "bias", None) is not None:
        raise TypeError("logit_attribution needs a final RMSNorm (weight and eps, no bias).")
    batch = parts.final.shape[0]
    rows = torch.arange(batch)
    pos = _per_row("positions", positions, batch)
    tgt = _per_row("targets", targets, batch)
    seq, vocab = parts.logits.shape[1], parts.logits.shape[2]
    if (pos < 0).any() or (pos >= seq).any():
        raise ValueError(f"positions must be in 0 .. {seq - 1}, got {pos.tolist()}.")
    oth = None if others is None else _per_row("others", others, batch)
    for name, ids in (("targets", tgt), ("others", oth)):
        if ids is not None and ((ids < 0).any() or (ids >= vocab).any()):
            raise ValueError(f"{name} must be token ids in 0 .. {vocab - 1}, got {ids.tolist()}.")
    weight = output.weight.detach().float()
    direction = weight[tgt]
    total = parts.logits[rows, pos, tgt]
    if oth is not None:
        direction = direction - weight[oth]
        total = total - parts.logits[rows, pos, oth]
    h = parts.final[rows, pos]  # (batch, dim)
    scale = norm.weight.detach().float() * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    read = scale * direction  # (batch, dim): what one unit of each feature adds to the logit
    return LogitAttribution(
        embedding=(parts.embedding[rows, pos] * read).sum(-1),
        heads=(parts.heads[:, :, rows, pos] * read).sum(-1),
        feed_forward=(parts.feed_forward[:, rows, pos] * read).sum(-1),
        total=total,
    )


# --- activation patching ----------------------------------------------------------------------


def head_outputs(model: nn.Module, tokens: torch.Tensor) -> list[torch.Tensor]:
    """The heads' outputs side by side, per layer: the input of attention.wo, (b, seq, heads*d)."""
    _, layers, _, _ = _parts_of(model, "head_outputs")
    seen: list[torch.Tensor] = []

    def keep(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.append(args[0].detach().clone())

    handles = [layer.attention.wo.register_forward_pre_hook(keep) for layer in layers]
    try:
        with torch.no_grad():
            model(tokens)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def patch_head(
    corrupt: torch.Tensor, clean: torch.Tensor, head: int, position: int | None, head_dim: int
) -> torch.Tensor:
    """A copy of `corrupt` in which one head's output at one position comes from `clean`.

    corrupt and clean: the input of attention.wo, (batch, seq, heads * head_dim), of the
    corrupted and the clean run. Head h owns the features h*head_dim .. (h+1)*head_dim - 1.
    position=None patches the head at every position. The inputs are not changed.
    """
    if corrupt.shape != clean.shape or corrupt.dim() != 3:
        raise ValueError(
            f"patch_head: corrupt {tuple(corrupt.shape)} and clean {tuple(clean.shape)} must "
            "have the same shape (batch, seq, heads * head_dim): run the two token sequences "
            "with the same length."
        )
    n_heads = corrupt.shape[-1] // head_dim
    if head_dim < 1 or corrupt.shape[-1] % head_dim or not 0 <= head < n_heads:
        raise ValueError(f"patch_head: head {head} with head_dim {head_dim} is not one of the "
                         f"{n_heads} heads of width {corrupt.shape[-1]}.")
    if position is not None and not -corrupt.shape[1] <= position < corrupt.shape[1]:
        raise ValueError(f"patch_head: position {position} is outside 0 .. {corrupt.shape[1] - 1}.")
    out = corrupt.clone()
    features = slice(head * head_dim, (head + 1) * head_dim)
    where = slice(None) if position is None else position
    out[:, where, features] = clean[:, where, features]
    return out


PatchFn = Callable[[torch.Tensor, torch.Tensor, int, "int | None", int], torch.Tensor]


@contextmanager
def patched_heads(
    model: nn.Module,
    clean: Sequence[torch.Tensor],
    patches: Iterable[tuple[int, int, int | None]],
    patch: PatchFn = patch_head,
) -> Iterator[None]:
    """Inside the with-block, each (layer, head, position) outputs what it did in the clean run.

    clean: head_outputs(model, clean_tokens). A forward pre-hook on each chosen layer's
    attention.wo replaces the head's slice with `patch`; the hooks are removed afterwards, also
    after an exception. Run the corrupted tokens inside the block.
    """
    _, layers, _, _ = _parts_of(model, "patched_heads")
    if len(clean) != len(layers):
        raise ValueError(f"clean holds {len(clean)} layers, the model has {len(layers)}.")
    chosen: dict[int, list[tuple[int, int | None]]] = {}
    for layer, head, position in patches:
        if not 0 <= layer < len(layers):
            raise ValueError(f"layer {layer} does not exist: the model has 0 .. {len(layers) - 1}.")
        chosen.setdefault(int(layer), []).append((int(head), position))

    def make_hook(layer: int) -> Callable[..., tuple[torch.Tensor, ...]]:
        head_dim = layers[layer].attention.head_dim

        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            x = args[0]
            source = clean[layer].to(x.dtype)
            if x.shape != source.shape:
                raise ValueError(
                    f"patched_heads: the run has shape {tuple(x.shape)} at layer {layer} but "
                    f"the clean outputs {tuple(source.shape)}; the clean and corrupted tokens "
                    "must have the same shape."
                )
            for head, position in chosen[layer]:
                x = patch(x, source, head, position, head_dim)
            return (x, *args[1:])

        return hook

    handles = [layers[layer].attention.wo.register_forward_pre_hook(make_hook(layer))
               for layer in sorted(chosen)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def restored_share(
    value: torch.Tensor | float, clean: torch.Tensor | float, corrupt: torch.Tensor | float
) -> torch.Tensor:
    """(value - corrupt) / (clean - corrupt): 0 = nothing of the clean metric back, 1 = all."""
    value, clean, corrupt = (
        torch.as_tensor(v, dtype=torch.float64) for v in (value, clean, corrupt)
    )
    gap = clean - corrupt
    if (gap.abs() < 1e-9).any():
        raise ValueError(
            "restored_share: the clean and corrupted metrics are equal, so there is nothing to "
            "restore. Pick a corruption that changes the prediction."
        )
    return (value - corrupt) / gap


def patching_effects(
    model: nn.Module,
    clean_tokens: torch.Tensor,
    corrupt_tokens: torch.Tensor,
    metric: Callable[[torch.Tensor], torch.Tensor],
    positions: Sequence[int | None | torch.Tensor] = (None,),
    patch: PatchFn = patch_head,
) -> torch.Tensor:
    """Patch each (layer, head) at each position alone from the clean run into the corrupted one.

    clean_tokens and corrupt_tokens: (batch, seq), row j of one the counterpart of row j of the
    other. A position is an int (the same for every row), None (every position) or a long
    tensor (batch,) with one position per row. metric(logits (batch, seq, vocab)) returns one
    value per row, shape (batch,). The result, of shape (layers, heads, len(positions), batch),
    holds the metric of every patched run. All positions of one head run as one batch.
    Turn it into shares with restored_share(effects, metric(clean), metric(corrupt)).
    """
    _, layers, _, _ = _parts_of(model, "patching_effects")
    if clean_tokens.shape != corrupt_tokens.shape or clean_tokens.dim() != 2:
        raise ValueError(
            f"patching_effects: the clean tokens {tuple(clean_tokens.shape)} and the corrupted "
            f"ones {tuple(corrupt_tokens.shape)} must have the same shape (batch, seq), so that "
            "positions match. Swap a name for one with as many tokens."
        )
    batch = clean_tokens.shape[0]
    places: list[int | None | torch.Tensor] = []
    for position in positions:
        if isinstance(position, torch.Tensor):
            position = _per_row("a position", position, batch)
        places.append(position)
    n_places = len(places)
    clean = [c.repeat(n_places, 1, 1) for c in head_outputs(model, clean_tokens)]
    runs = corrupt_tokens.repeat(n_places, 1)  # chunk k (rows k*batch ..) is patched at places[k]

    def make_hook(head: int, head_dim: int, source: torch.Tensor) -> Callable[..., tuple]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            x, src = args[0], source.to(args[0].dtype)
            chunks = []
            for k, place in enumerate(places):
                rows = slice(k * batch, (k + 1) * batch)
                if isinstance(place, torch.Tensor):
                    chunks += [patch(x[r : r + 1], src[r : r + 1], head, int(place[j]), head_dim)
                               for j, r in enumerate(range(rows.start, rows.stop))]
                else:
                    chunks.append(patch(x[rows], src[rows], head, place, head_dim))
            return (torch.cat(chunks), *args[1:])

        return hook

    n_heads = layers[0].attention.n_heads
    out = torch.zeros(len(layers), n_heads, n_places, batch, dtype=torch.float64)
    with torch.no_grad():
        for layer_id, layer in enumerate(layers):
            attention = layer.attention
            for head in range(n_heads):
                hook = make_hook(head, attention.head_dim, clean[layer_id])
                handle = attention.wo.register_forward_pre_hook(hook)
                try:
                    logits = model(runs)
                finally:
                    handle.remove()
                for k in range(n_places):
                    value = metric(logits[k * batch : (k + 1) * batch])
                    out[layer_id, head, k] = torch.as_tensor(value, dtype=torch.float64)
    return out
