"""Plots, widget helpers and small analyses for looking at a model: positions, attention,
sampling, and what a trained model has learned (copying heads, the logit lens, PCA).

Every function here is pure: it takes numbers or tensors and returns data, an Axes or a Figure.
Functions that return a whole `Figure` build it without pyplot, so that an ipywidgets
`interactive` shows each figure exactly once and nothing is left open in pyplot. The one
exception is `LiveLossPlot`, the training callback that keeps the curve it has drawn so far.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import nn

from .generate import next_token_distribution
from .rope import apply_rope, rope_frequencies

KEY_AXIS = "key position (token)"
QUERY_AXIS = "query position (token)"
WEIGHT_LABEL = "attention weight"


def _tick_labels(labels: Sequence[str] | None, size: int, what: str) -> list[str]:
    """Labels 'i: word' for a heat map axis, or plain indices when no labels are given."""
    if labels is None:
        return [str(i) for i in range(size)]
    if len(labels) != size:
        raise ValueError(f"{what} has {len(labels)} entries but the weights have {size} {what}.")
    return [f"{i}: {label}" for i, label in enumerate(labels)]


def attention_heatmap(
    weights: torch.Tensor,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    ax: Axes | None = None,
    title: str = "attention weights",
    colorbar: bool = True,
) -> Axes:
    """Draw attention weights (queries, keys) as a heat map with token labels; return the Axes."""
    if weights.dim() != 2:
        raise ValueError(
            f"attention_heatmap expects weights of shape (queries, keys), got "
            f"{tuple(weights.shape)}; pick one batch entry and one head, e.g. w[0, head]."
        )
    n_queries, n_keys = weights.shape
    if key_labels is None and query_labels is not None and len(query_labels) == n_keys:
        key_labels = query_labels  # self-attention: the same tokens on both axes
    rows = _tick_labels(query_labels, n_queries, "queries")
    cols = _tick_labels(key_labels, n_keys, "keys")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.6))
    image = ax.imshow(
        weights.detach().float().cpu().numpy(), cmap="viridis", vmin=0.0, vmax=1.0
    )
    ax.set_xticks(range(n_keys), cols, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n_queries), rows, fontsize=8)
    ax.set(title=title, xlabel=KEY_AXIS, ylabel=QUERY_AXIS)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label=WEIGHT_LABEL)
    return ax


def rope_scores_by_distance(
    head_dim: int,
    theta: float,
    max_distance: int,
    q: torch.Tensor | None = None,
    k: torch.Tensor | None = None,
) -> torch.Tensor:
    """Score <RoPE(q, m), RoPE(k, n)> for m - n = 0 .. max_distance; q = k = all ones by default."""
    if max_distance < 0:
        raise ValueError(f"max_distance must be >= 0, got {max_distance}.")
    q = torch.ones(head_dim) if q is None else q.float()
    k = torch.ones(head_dim) if k is None else k.float()
    if q.shape != (head_dim,) or k.shape != (head_dim,):
        raise ValueError(
            f"q and k must be vectors of length head_dim={head_dim}; got shapes "
            f"{tuple(q.shape)} and {tuple(k.shape)}."
        )
    steps = max_distance + 1
    rotated_q = apply_rope(q.expand(1, steps, 1, head_dim), theta=theta)[0, :, 0]  # q at m = 0..
    rotated_k = apply_rope(k.expand(1, 1, 1, head_dim), theta=theta)[0, 0, 0]  # k at n = 0
    return rotated_q @ rotated_k


@dataclass(frozen=True)
class RotationDemo:
    """One RoPE pair turned from position 0 to `position`: the data behind the RoPE slider."""

    position: int
    pair: int
    frequency: float  # radians per position for this pair
    angle: float  # position * frequency, in radians
    path: torch.Tensor  # (position + 1, 2): where the pair (1, 0) lands at positions 0 .. position

    @property
    def rotated(self) -> torch.Tensor:
        """Where the pair (1, 0) lands at `position`."""
        return self.path[-1]


def rotate_2d_demo(position: int, theta: float, head_dim: int, pair: int) -> RotationDemo:
    """Turn the pair (1, 0) with RoPE for positions 0 .. position; return the points and angle."""
    if position < 0:
        raise ValueError(f"position must be >= 0, got {position}.")
    if not 0 <= pair < head_dim // 2:
        raise ValueError(f"pair must be in 0 .. {head_dim // 2 - 1} for head_dim={head_dim}.")
    x = torch.zeros(1, position + 1, 1, head_dim)
    x[..., 2 * pair] = 1.0  # the pair (x[2i], x[2i + 1]) = (1, 0) at every position
    rotated = apply_rope(x, theta=theta)[0, :, 0, 2 * pair : 2 * pair + 2]
    frequency = float(rope_frequencies(head_dim, theta)[pair])
    return RotationDemo(position, pair, frequency, position * frequency, rotated)


def rope_rotation_figure(
    position: int, theta: float = 10000.0, head_dim: int = 64, pair: int = 0
) -> Figure:
    """The RoPE slider's picture: one pair turning on a circle, and every pair's angle."""
    demo = rotate_2d_demo(position, theta, head_dim, pair)
    fig = Figure(figsize=(8, 3.4))
    circle_ax, bars_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.5]})

    t = torch.linspace(0, 2 * math.pi, 200)
    circle_ax.plot(t.cos(), t.sin(), color="lightgrey", linewidth=1)
    path = demo.path.numpy()
    circle_ax.scatter(path[:, 0], path[:, 1], s=8, color="tab:blue", alpha=0.4,
                      label="earlier positions")
    circle_ax.annotate("", xy=(1, 0), xytext=(0, 0),
                       arrowprops={"arrowstyle": "->", "color": "grey"})
    x, y = (float(v) for v in demo.rotated)
    circle_ax.annotate("", xy=(x, y), xytext=(0, 0),
                       arrowprops={"arrowstyle": "->", "color": "tab:red", "linewidth": 2})
    circle_ax.set(
        title=f"pair {pair}: {demo.angle:.2f} rad at position {position}",
        xlabel=f"feature {2 * pair} (first of the pair)",
        ylabel=f"feature {2 * pair + 1} (second)",
        xlim=(-1.2, 1.2), ylim=(-1.2, 1.2), aspect="equal",
    )
    circle_ax.legend(loc="lower left", fontsize=7)

    angles = (position * rope_frequencies(head_dim, theta).double()) % (2 * math.pi)
    colors = ["tab:red" if i == pair else "tab:blue" for i in range(head_dim // 2)]
    bars_ax.bar(range(head_dim // 2), angles.numpy(), color=colors)
    bars_ax.set(
        title=f"angle of every pair at position {position}, theta={theta:g}",
        xlabel="pair index i", ylabel="angle mod 2π (radians)", ylim=(0, 2 * math.pi),
    )
    fig.tight_layout()
    return fig


def attention_grid(
    weights: torch.Tensor,
    labels: Sequence[str] | None = None,
    title: str = "attention weights of every head",
) -> Figure:
    """One small heat map per head for weights (heads, queries, keys), on a shared colour scale."""
    if weights.dim() != 3:
        raise ValueError(
            f"attention_grid expects weights of shape (heads, queries, keys), got "
            f"{tuple(weights.shape)}; pick one batch entry first, e.g. w[0]."
        )
    n_heads = weights.shape[0]
    fig = Figure(figsize=(1.9 * n_heads + 1, 2.9))
    axes = fig.subplots(1, n_heads, squeeze=False)[0]
    for head, ax in enumerate(axes):
        attention_heatmap(weights[head], labels, labels, ax=ax, title=f"head {head}",
                          colorbar=False)
        if head:
            ax.set_ylabel("")
            ax.set_yticklabels([])
    image = axes[0].images[0]
    fig.colorbar(image, ax=list(axes), label=WEIGHT_LABEL, shrink=0.9)
    fig.suptitle(title, fontsize=10)
    return fig


def _one_head(
    attentions: Sequence[torch.Tensor], layer: int, head: int, batch: int
) -> torch.Tensor:
    """One head's (queries, keys) weights from per-layer (batch, heads, queries, keys) tensors."""
    if not 0 <= layer < len(attentions):
        raise ValueError(f"layer must be in 0 .. {len(attentions) - 1}, got {layer}.")
    weights = attentions[layer]
    if weights.dim() != 4:
        raise ValueError(
            f"each entry of attentions should be (batch, heads, queries, keys); layer {layer} "
            f"has shape {tuple(weights.shape)}."
        )
    if not 0 <= head < weights.shape[1]:
        raise ValueError(f"head must be in 0 .. {weights.shape[1] - 1}, got {head}.")
    one = weights[batch, head].detach().float().cpu()
    return one


def attention_browser_figure(
    attentions: Sequence[torch.Tensor],
    layer: int,
    head: int,
    labels: Sequence[str] | None = None,
    batch: int = 0,
) -> Figure:
    """The layer/head browser's picture: one head's heat map and what the last token looks at."""
    one = _one_head(attentions, layer, head, batch)
    fig = Figure(figsize=(8, 3.4))
    map_ax, bar_ax = fig.subplots(1, 2)
    attention_heatmap(one, labels, labels, ax=map_ax, title=f"layer {layer}, head {head}")
    keys = _tick_labels(labels, one.shape[1], "keys")
    bar_ax.bar(range(one.shape[1]), one[-1].numpy(), color="tab:orange")
    bar_ax.set_xticks(range(one.shape[1]), keys, rotation=60, ha="right", fontsize=8)
    bar_ax.set(
        title=f"what the last query ({keys[-1]}) looks at",
        xlabel=KEY_AXIS, ylabel=WEIGHT_LABEL, ylim=(0, 1),
    )
    fig.tight_layout()
    return fig


# --- looking inside a trained model (chapter 11) ----------------------------------------------
# Appended here, so the imports of this part sit with it.


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


def head_scores_heatmap(
    scores: torch.Tensor,
    ax: Axes | None = None,
    title: str = "score of every head",
    label: str = "score",
    fmt: str = "{:.2f}",
) -> Axes:
    """Draw one number per (layer, head), scores of shape (layers, heads), with the values."""
    if scores.dim() != 2:
        raise ValueError(f"scores must have shape (layers, heads), got {tuple(scores.shape)}.")
    values = scores.detach().float().cpu()
    n_layers, n_heads = values.shape
    if ax is None:
        _, ax = plt.subplots(figsize=(1.1 * n_heads + 2, 0.7 * n_layers + 1.2))
    image = ax.imshow(values.numpy(), cmap="magma", vmin=0.0, vmax=max(float(values.max()), 1e-9))
    middle = (float(values.max()) + float(values.min())) / 2
    for layer in range(n_layers):
        for head in range(n_heads):
            value = float(values[layer, head])
            ax.text(head, layer, fmt.format(value), ha="center", va="center", fontsize=8,
                    color="black" if value > middle else "white")
    ax.set_xticks(range(n_heads), [str(h) for h in range(n_heads)])
    ax.set_yticks(range(n_layers), [str(layer) for layer in range(n_layers)])
    ax.set(title=title, xlabel="head", ylabel="layer")
    ax.figure.colorbar(image, ax=ax, label=label)
    return ax


def layer_head_grid(
    attentions: Sequence[torch.Tensor],
    batch: int = 0,
    title: str = "attention weights of every layer and head",
) -> Figure:
    """Every head of every layer as a small heat map (rows: layers, columns: heads)."""
    if not attentions:
        raise ValueError("layer_head_grid needs the attention weights of at least one layer.")
    n_layers, n_heads = len(attentions), attentions[0].shape[1]
    fig = Figure(figsize=(1.8 * n_heads + 1, 1.7 * n_layers + 0.6))
    axes = fig.subplots(n_layers, n_heads, squeeze=False)
    image = None
    for layer in range(n_layers):
        for head in range(n_heads):
            ax = axes[layer, head]
            one = attentions[layer][batch, head].detach().float().cpu()
            image = ax.imshow(one.numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"layer {layer}, head {head}", fontsize=8)
            if head == 0:
                ax.set_ylabel("query", fontsize=8)
            if layer == n_layers - 1:
                ax.set_xlabel("key", fontsize=8)
    fig.colorbar(image, ax=axes.ravel().tolist(), label=WEIGHT_LABEL, shrink=0.8)
    fig.suptitle(title, fontsize=10)
    return fig


def head_picker_figure(
    attentions: Sequence[torch.Tensor],
    layer: int,
    head: int,
    query: int,
    labels: Sequence[str] | None = None,
    highlight: Sequence[int] = (),
    batch: int = 0,
) -> Figure:
    """The head picker's picture: one head's heat map, and the weights of one query as bars.

    The chosen query's row is marked on the heat map; bars for the keys in `highlight` (e.g. the
    first mention of a name) are drawn in red.
    """
    one = _one_head(attentions, layer, head, batch)
    if not 0 <= query < one.shape[0]:
        raise ValueError(f"query must be in 0 .. {one.shape[0] - 1}, got {query}.")
    keys = _tick_labels(labels, one.shape[1], "keys")
    size = 8 if one.shape[1] <= 16 else 6 if one.shape[1] <= 40 else 5
    fig = Figure(figsize=(10, 4.8))
    map_ax, bar_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    attention_heatmap(one, labels, labels, ax=map_ax, title=f"layer {layer}, head {head}",
                      colorbar=False)
    map_ax.tick_params(labelsize=size)
    map_ax.axhline(query, color="tab:red", linewidth=0.8)
    visible = query + 1 if one.shape[0] == one.shape[1] else one.shape[1]
    marked = {int(k) for k in highlight}
    colors = ["tab:red" if k in marked else "tab:blue" for k in range(visible)]
    bar_ax.bar(range(visible), one[query, :visible].numpy(), color=colors)
    bar_ax.set_xticks(range(visible), keys[:visible], rotation=90, fontsize=size)
    bar_ax.set(title=f"what query {keys[query]} looks at (red: highlighted keys)",
               xlabel=KEY_AXIS, ylabel=WEIGHT_LABEL, ylim=(0, 1))
    bar_ax.title.set_fontsize(9)
    fig.tight_layout()
    return fig


# --- the sampling explorer (chapter 10) -------------------------------------------------------
# Appended here, so the import of this part sits with it.


SAMPLED_COLOR = "tab:red"


def sampling_figure(
    logits: torch.Tensor,
    labels: Sequence[str],
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    n_show: int = 12,
) -> tuple[Figure, int]:
    """The sampling explorer's picture, and the id it draws.

    logits is one row (V,) of next-token logits and labels names each of the V ids. The figure
    shows the n_show tokens that are most likely at temperature 1 with no filter (grey), and
    their probability after temperature, top-k and top-p (`generate.next_token_distribution`;
    blue, 0 for a removed token). One id is drawn from the filtered distribution with
    torch.multinomial and a generator seeded with `seed`; its bar is red, and it is added at
    the right end when it is not among the n_show shown. Returns (figure, drawn id).
    """
    if logits.dim() != 1:
        raise ValueError(
            f"sampling_figure expects one row of logits, shape (V,), got {tuple(logits.shape)}; "
            "pick one position first, e.g. logits[0, -1]."
        )
    vocab = logits.shape[0]
    if len(labels) != vocab:
        raise ValueError(f"labels has {len(labels)} entries but the logits have {vocab}.")
    if isinstance(n_show, bool) or not isinstance(n_show, int) or n_show < 1:
        raise ValueError(f"n_show must be an int >= 1, got {n_show!r}.")
    row = logits.detach().float().cpu()
    before = torch.softmax(row, dim=-1)
    after = next_token_distribution(row, temperature, top_k, top_p)
    generator = torch.Generator().manual_seed(seed)
    drawn = int(torch.multinomial(after, 1, generator=generator))

    order = torch.sort(before, descending=True, stable=True).indices.tolist()
    shown = order[: min(n_show, vocab)]
    if drawn not in shown:
        shown.append(drawn)
    x = torch.arange(len(shown), dtype=torch.float)
    kept = int((after > 0).sum())

    fig = Figure(figsize=(8, 3.4))
    ax = fig.subplots()
    ax.bar(x - 0.2, before[shown].numpy(), width=0.4, color="lightgrey",
           label="model (T = 1, no filter)")
    colors = [SAMPLED_COLOR if i == drawn else "tab:blue" for i in shown]
    ax.bar(x + 0.2, after[shown].numpy(), width=0.4, color=colors,
           label="after temperature, top-k, top-p")
    ax.set_xticks(x.tolist(), [labels[i] for i in shown], rotation=45, ha="right", fontsize=8)
    k_text = "off" if top_k is None else str(top_k)
    p_text = "off" if top_p is None else f"{top_p:g}"
    ax.set(
        title=(f"T = {temperature:g}, top-k {k_text}, top-p {p_text}: {kept} of {vocab} tokens "
               f"kept; sampled {labels[drawn]}"),
        xlabel="next token (most likely first, at T = 1)",
        ylabel="probability",
        ylim=(0, min(1.05, 1.25 * max(float(before[shown].max()), float(after[shown].max())))),
    )
    ax.title.set_fontsize(9)
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Patch(color=SAMPLED_COLOR, label="the sampled token"))
    ax.legend(handles=handles, fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig, drawn


class LiveLossPlot:
    """A loss curve for `train(callback=...)` that redraws every `every` steps, in milliseconds.

    The axes are fixed in advance (steps 0 to max_steps, loss 0 to max_loss), so a redraw only
    paints the two lines onto the saved background (blitting) and encodes a PNG; a full
    matplotlib draw of the figure would cost about ten times more and slow training down.
    """

    def __init__(
        self,
        max_steps: int,
        max_loss: float,
        every: int = 10,
        reference: float | None = None,
        reference_label: str = "",
    ) -> None:
        if max_steps < 1 or every < 1 or not max_loss > 0:
            raise ValueError(
                f"need max_steps >= 1, every >= 1 and max_loss > 0, got {max_steps}, {every} "
                f"and {max_loss}."
            )
        self.every = every
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.val_steps: list[int] = []
        self.val_losses: list[float] = []
        self.redraws = 0
        self.figure = Figure(figsize=(8, 3))
        FigureCanvasAgg(self.figure)
        self._ax = self.figure.subplots()
        if reference is not None:
            self._ax.axhline(reference, color="grey", ls=":", lw=1, label=reference_label)
        (self._train_line,) = self._ax.plot([], [], lw=1, label="training batch (every step)")
        (self._val_line,) = self._ax.plot([], [], "s-", label="validation")
        self._ax.set(xlim=(0, max_steps), ylim=(0, max_loss), title="loss while training",
                     xlabel="optimiser step", ylabel="loss (nats per token)")
        self._ax.legend(loc="upper right", fontsize=8)
        self.figure.tight_layout()
        self.figure.canvas.draw()
        self._background = self.figure.canvas.copy_from_bbox(self.figure.bbox)
        self._png = self._render()

    def __call__(self, record: Mapping[str, float]) -> bool:
        """Add one record of `train`; redraw at every `every`-th step and at every evaluation."""
        step = int(record["step"])
        self.steps.append(step)
        self.losses.append(float(record["train_loss"]))
        evaluated = "val_loss" in record
        if evaluated:
            self.val_steps.append(step)
            self.val_losses.append(float(record["val_loss"]))
        if step % self.every and not evaluated:
            return False
        self._train_line.set_data(self.steps, self.losses)
        self._val_line.set_data(self.val_steps, self.val_losses)
        self._png = self._render()
        self.redraws += 1
        return True

    def png(self) -> bytes:
        """The PNG of the last redraw."""
        return self._png

    def _render(self) -> bytes:
        from PIL import Image

        canvas = self.figure.canvas
        canvas.restore_region(self._background)
        self._ax.draw_artist(self._train_line)
        self._ax.draw_artist(self._val_line)
        size = canvas.get_width_height()
        image = Image.frombuffer("RGBA", size, canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
        out = io.BytesIO()
        image.convert("RGB").save(out, format="png", compress_level=1)
        return out.getvalue()
