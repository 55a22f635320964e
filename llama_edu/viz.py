"""Plots and widget helpers for looking at a model: positions, attention, sampling, and the
heads of a trained model. The analyses behind chapter 11's figures (copy scores, the logit lens,
PCA, induction scores, logit attribution, patching) live in `llama_edu.interpretability`.

Every function here is pure: it takes numbers or tensors and returns data, an Axes or a Figure.
Functions that return a whole `Figure` build it without pyplot, so that an ipywidgets
`interactive` shows each figure exactly once and nothing is left open in pyplot. The one
exception is `LiveLossPlot`, the training callback that keeps the curve it has drawn so far.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

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


MASKED_LABEL = "masked (future)"
MASKED_STYLE = {"facecolor": "lightgrey", "edgecolor": "grey", "hatch": "///", "linewidth": 0.0}


def masked_patch() -> Patch:
    """The legend entry for masked cells, drawn as in attention_heatmap."""
    return Patch(label=MASKED_LABEL, **MASKED_STYLE)


def _hidden_cells(mask: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    """Boolean (queries, keys): True where an additive mask is -inf (or a bool mask is True)."""
    if mask is None:
        return None
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(
            f"mask has shape {tuple(mask.shape)} but the weights have shape {tuple(shape)}; "
            f"pass the additive mask of these queries and keys, e.g. causal_mask(n)."
        )
    if mask.dtype == torch.bool:
        return mask.cpu()
    return torch.isneginf(mask).cpu()


def attention_heatmap(
    weights: torch.Tensor,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    ax: Axes | None = None,
    title: str = "attention weights",
    colorbar: bool = True,
    mask: torch.Tensor | None = None,
    legend: bool = True,
) -> Axes:
    """Draw attention weights (queries, keys) as a heat map with token labels; return the Axes.

    With `mask` (the additive mask, -inf where a key is hidden), hidden cells are drawn grey and
    hatched, so that they do not look like a weight of 0 that the model chose.
    """
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
    hidden = _hidden_cells(mask, weights.shape)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.6))
    image = ax.imshow(
        weights.detach().float().cpu().numpy(), cmap="viridis", vmin=0.0, vmax=1.0
    )
    if hidden is not None:
        for i, j in hidden.nonzero().tolist():
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, **MASKED_STYLE))
        if legend and hidden.any():
            ax.legend(handles=[masked_patch()], loc="upper right", fontsize=7, framealpha=1.0)
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
    """One pair turning on its circle (left), and every pair at `position` as a clock hand (right).

    On the right, pair i sits on a ring of radius growing with i (inner rings: fast pairs), at its
    angle position * omega_i; the chosen pair is circled in red.
    """
    demo = rotate_2d_demo(position, theta, head_dim, pair)
    fig = Figure(figsize=(8, 3.6), layout="constrained")
    circle_ax, pairs_ax = fig.subplots(1, 2)

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

    n_pairs = head_dim // 2
    angles = position * rope_frequencies(head_dim, theta).double()
    radius = 0.25 + 0.75 * torch.arange(n_pairs, dtype=torch.float64) / max(n_pairs - 1, 1)
    for r in radius.tolist():
        pairs_ax.plot(r * t.cos(), r * t.sin(), color="#e4e4e4", linewidth=0.6, zorder=0)
    pairs_ax.plot([0, 1.05], [0, 0], color="grey", linestyle=":", linewidth=1,
                  label="angle 0 (position 0)")
    points = pairs_ax.scatter(
        (radius * angles.cos()).numpy(), (radius * angles.sin()).numpy(),
        c=range(n_pairs), cmap="viridis", s=18, zorder=2,
    )
    chosen_x, chosen_y = radius[pair] * angles[pair].cos(), radius[pair] * angles[pair].sin()
    pairs_ax.scatter([float(chosen_x)], [float(chosen_y)],
                     s=90, facecolors="none", edgecolors="tab:red", linewidths=1.5, zorder=3,
                     label=f"pair {pair}")
    fig.colorbar(points, ax=pairs_ax, label="pair index i (inner ring: fast)", shrink=0.9)
    pairs_ax.set(
        title=f"all {n_pairs} pairs at position {position}, theta={theta:g}",
        xlabel="cos(position · ω_i)", ylabel="sin(position · ω_i)",
        xlim=(-1.1, 1.1), ylim=(-1.1, 1.1), aspect="equal",
    )
    pairs_ax.title.set_fontsize(10)
    pairs_ax.legend(loc="lower left", fontsize=7)
    return fig


def rope_score_figure(
    theta: float = 10000.0,
    head_dim: int = 128,
    max_distance: int = 5000,
    reference_theta: float = 10000.0,
) -> Figure:
    """The RoPE slider's picture: the score of q = k = all ones against their distance."""
    scores = rope_scores_by_distance(head_dim, theta, max_distance)
    reference = rope_scores_by_distance(head_dim, reference_theta, max_distance)
    distance = torch.arange(1, max_distance + 1)
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.plot(distance, reference[1:], color="lightgrey", linewidth=0.8,
            label=f"theta = {reference_theta:,.0f} (reference)")
    ax.plot(distance, scores[1:], color="tab:blue", linewidth=0.8, label=f"theta = {theta:,.0f}")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set(
        xscale="log", ylim=(-0.35 * head_dim, 1.05 * head_dim),
        title=f"RoPE score of q = k = all ones, head_dim {head_dim} ({head_dim} at distance 0)",
        xlabel="distance m - n (tokens, log scale)", ylabel="score q·k (unitless)",
    )
    ax.legend(loc="upper right", fontsize=8)
    return fig


def attention_grid(
    weights: torch.Tensor,
    labels: Sequence[str] | None = None,
    title: str = "attention weights of every head",
    mask: torch.Tensor | None = None,
) -> Figure:
    """One small heat map per head for weights (heads, queries, keys), on a shared colour scale.

    With `mask` (additive, shape (queries, keys)), hidden cells are grey and hatched in every map.
    """
    if weights.dim() != 3:
        raise ValueError(
            f"attention_grid expects weights of shape (heads, queries, keys), got "
            f"{tuple(weights.shape)}; pick one batch entry first, e.g. w[0]."
        )
    n_heads = weights.shape[0]
    fig = Figure(figsize=(2.2 * n_heads + 1.4, 3.4), layout="constrained")
    axes = fig.subplots(1, n_heads, squeeze=False)[0]
    for head, ax in enumerate(axes):
        attention_heatmap(weights[head], labels, labels, ax=ax, title=f"head {head}",
                          colorbar=False, mask=mask, legend=False)
        ax.set_xlabel("")  # one shared x label below the row, so that they do not overlap
        ax.tick_params(axis="x", labelrotation=90, labelsize=7)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("center")
        if head:
            ax.set_ylabel("")
            ax.set_yticklabels([])
    image = axes[0].images[0]
    fig.colorbar(image, ax=list(axes), label=WEIGHT_LABEL, shrink=0.9)
    fig.supxlabel(KEY_AXIS, fontsize=10)
    if mask is not None and bool(_hidden_cells(mask, weights.shape[1:]).any()):
        fig.legend(handles=[masked_patch()], loc="upper right", fontsize=8)
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


# --- looking inside a trained model (chapter 11): the figures; the analyses are in
# llama_edu.interpretability.


LABEL_SIZE = 9  # points: the smallest tick label of the chapter 11 figures


def head_scores_heatmap(
    scores: torch.Tensor,
    ax: Axes | None = None,
    title: str = "score of every head",
    label: str = "score",
    fmt: str = "{:.2f}",
    colorbar: bool = True,
) -> Axes:
    """Draw one number per (layer, head), scores of shape (layers, heads) in 0..1, with the values.

    The colour scale is fixed from 0 to 1, the range of an attention weight, so that maps of
    different scores can be compared and a small score looks small.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must have shape (layers, heads), got {tuple(scores.shape)}.")
    values = scores.detach().float().cpu()
    n_layers, n_heads = values.shape
    if ax is None:
        _, ax = plt.subplots(figsize=(1.1 * n_heads + 2, 0.7 * n_layers + 1.2))
    image = ax.imshow(values.numpy(), cmap="magma", vmin=0.0, vmax=1.0)
    for layer in range(n_layers):
        for head in range(n_heads):
            value = float(values[layer, head])
            ax.text(head, layer, fmt.format(value), ha="center", va="center",
                    fontsize=LABEL_SIZE, color="black" if value > 0.5 else "white")
    ax.set_xticks(range(n_heads), [str(h) for h in range(n_heads)], fontsize=LABEL_SIZE)
    ax.set_yticks(range(n_layers), [str(layer) for layer in range(n_layers)], fontsize=LABEL_SIZE)
    ax.set(title=title, xlabel="head", ylabel="layer")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label=label)
    return ax


def layer_head_grid(
    attentions: Sequence[torch.Tensor],
    batch: int = 0,
    title: str = "attention weights of every layer and head",
    tokens: int | None = None,
) -> Figure:
    """Every head of every layer as a small heat map (rows: layers, columns: heads).

    tokens, when given, keeps only the first `tokens` queries and keys, so that each small map
    stays readable. All maps share one colour bar from 0 to 1.
    """
    if not attentions:
        raise ValueError("layer_head_grid needs the attention weights of at least one layer.")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int)
                               or tokens < 1):
        raise ValueError(f"tokens must be None or an int >= 1, got {tokens!r}.")
    n_layers, n_heads = len(attentions), attentions[0].shape[1]
    fig = Figure(figsize=(2.2 * n_heads + 1, 2.1 * n_layers + 0.6))
    axes = fig.subplots(n_layers, n_heads, squeeze=False)
    image = None
    for layer in range(n_layers):
        for head in range(n_heads):
            ax = axes[layer, head]
            one = attentions[layer][batch, head].detach().float().cpu()[:tokens, :tokens]
            image = ax.imshow(one.numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
            ticks = list(range(0, one.shape[1], 5))
            ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=LABEL_SIZE)
            ax.set_yticks(ticks, [str(t) for t in ticks], fontsize=LABEL_SIZE)
            ax.set_title(f"layer {layer}, head {head}", fontsize=LABEL_SIZE)
            if head == 0:
                ax.set_ylabel("query", fontsize=LABEL_SIZE)
            if layer == n_layers - 1:
                ax.set_xlabel("key", fontsize=LABEL_SIZE)
    fig.colorbar(image, ax=axes.ravel().tolist(), label=WEIGHT_LABEL, shrink=0.8)
    fig.suptitle(title, fontsize=11)
    return fig


def head_picker_figure(
    attentions: Sequence[torch.Tensor],
    layer: int,
    head: int,
    query: int,
    labels: Sequence[str] | None = None,
    highlight: Sequence[int] = (),
    batch: int = 0,
    window: int = 20,
) -> Figure:
    """The head picker's picture: one head's heat map near the query, and the query's weights.

    The heat map shows the `window` tokens that end at the chosen query (or the first `window`
    tokens), on a fixed 0..1 colour scale, with the query's row marked. The bars show the
    weights of the query on every key it can see; keys in `highlight` (e.g. the first mention
    of a name) are red.
    """
    one = _one_head(attentions, layer, head, batch)
    if not 0 <= query < one.shape[0]:
        raise ValueError(f"query must be in 0 .. {one.shape[0] - 1}, got {query}.")
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be an int >= 2, got {window!r}.")
    keys = _tick_labels(labels, one.shape[1], "keys")
    square = one.shape[0] == one.shape[1]
    start = max(0, min(query + 1, one.shape[1]) - window) if square else 0
    stop = min(start + window, one.shape[1])
    fig = Figure(figsize=(13, 5.2))
    map_ax, bar_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.7]})
    rows = range(start, stop) if square else range(one.shape[0])
    image = map_ax.imshow(one[rows.start:rows.stop, start:stop].numpy(), cmap="viridis",
                          vmin=0.0, vmax=1.0)
    map_ax.set_xticks(range(stop - start), keys[start:stop], rotation=90, fontsize=LABEL_SIZE)
    query_names = keys if square else [str(r) for r in range(one.shape[0])]
    map_ax.set_yticks(range(len(rows)), [query_names[r] for r in rows], fontsize=LABEL_SIZE)
    map_ax.set(title=f"layer {layer}, head {head}", xlabel=KEY_AXIS, ylabel=QUERY_AXIS)
    if query in rows:
        map_ax.axhline(query - rows.start, color="tab:red", linewidth=1.0)
    fig.colorbar(image, ax=map_ax, label=WEIGHT_LABEL, shrink=0.8)
    visible = query + 1 if square else one.shape[1]
    marked = {int(k) for k in highlight}
    colors = ["tab:red" if k in marked else "tab:blue" for k in range(visible)]
    bar_ax.bar(range(visible), one[query, :visible].numpy(), color=colors)
    bar_ax.set_xticks(range(visible), keys[:visible], rotation=90, fontsize=LABEL_SIZE)
    bar_ax.set(title=f"what query {keys[query]} looks at (red: highlighted keys)",
               xlabel=KEY_AXIS, ylabel=WEIGHT_LABEL, ylim=(0, 1))
    bar_ax.title.set_fontsize(10)
    fig.tight_layout()
    return fig


# --- the sampling explorer (chapter 10) -------------------------------------------------------
# Appended here, so the import of this part sits with it.


SAMPLED_COLOR = "tab:red"
KEPT_COLOR = "tab:blue"
REMOVED_HATCH = "///"


def sampling_figure(
    logits: torch.Tensor,
    labels: Sequence[str],
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    n_show: int = 30,
) -> tuple[Figure, int]:
    """The sampling explorer's picture, and the id it draws.

    logits is one row (V,) of next-token logits and labels names each of the V ids. The upper
    panel shows the n_show most likely tokens, most likely first, with their probability after
    the temperature: kept tokens in blue, tokens that top-k or top-p removes hatched, and a
    black tick at each kept token's probability after renormalising
    (`generate.next_token_distribution`). The lower panel shows the cumulative probability that
    top-p reads (after temperature and top-k), with a horizontal line at p and a vertical line
    after rank k. One id is drawn from the filtered distribution with torch.multinomial and a
    generator seeded with `seed`; its bar is red, and it is added at the right end when it is
    not among the n_show shown. Returns (figure, drawn id).
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
    tempered = next_token_distribution(row, temperature)  # checks the three settings
    seen_by_top_p = next_token_distribution(row, temperature, top_k)
    after = next_token_distribution(row, temperature, top_k, top_p)
    generator = torch.Generator().manual_seed(seed)
    drawn = int(torch.multinomial(after, 1, generator=generator))

    order = torch.sort(row, descending=True, stable=True).indices.tolist()
    shown = order[: min(n_show, vocab)]
    if drawn not in shown:
        shown.append(drawn)
    x = list(range(len(shown)))
    kept = int((after > 0).sum())
    n_ranked = min(n_show, vocab)  # the drawn token added at the end is not in rank order
    cumulative = seen_by_top_p[order].cumsum(dim=0)[:n_ranked]

    fig = Figure(figsize=(10, 5.6))
    bar_ax, cum_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for position, token in zip(x, shown, strict=True):
        removed = bool(after[token] == 0)
        bar_ax.bar(position, float(tempered[token]), width=0.8,
                   color="white" if removed else SAMPLED_COLOR if token == drawn else KEPT_COLOR,
                   edgecolor="grey" if removed else "none",
                   hatch=REMOVED_HATCH if removed else None)
    kept_x = [position for position, token in zip(x, shown, strict=True) if after[token] > 0]
    bar_ax.plot(kept_x, [float(after[shown[position]]) for position in kept_x], "_",
                color="black", markersize=12, markeredgewidth=2, label="after renormalising")
    k_text = "off" if top_k is None else str(top_k)
    p_text = "off" if top_p is None else f"{top_p:g}"
    bar_ax.set(
        title=(f"T = {temperature:g}, top-k {k_text}, top-p {p_text}: {kept} of {vocab} tokens "
               f"kept; sampled {labels[drawn]}"),
        ylabel=f"probability at T = {temperature:g}",
        ylim=(0, min(1.05, 1.2 * max(float(tempered[shown].max()), float(after[shown].max())))),
    )
    bar_ax.title.set_fontsize(10)
    handles, _ = bar_ax.get_legend_handles_labels()
    handles = [Patch(color=KEPT_COLOR, label="kept"),
               Patch(facecolor="white", edgecolor="grey", hatch=REMOVED_HATCH,
                     label="removed by top-k or top-p"),
               Patch(color=SAMPLED_COLOR, label="the sampled token"), *handles]
    bar_ax.legend(handles=handles, fontsize=9, loc="upper right")

    cum_ax.plot(x[:n_ranked], cumulative.tolist(), "o-", color="black", markersize=3,
                label="cumulative probability (after temperature and top-k)")
    if top_p is not None:
        cum_ax.axhline(top_p, color="tab:green", linestyle="--", label=f"top-p: p = {top_p:g}")
    if top_k is not None and top_k < len(x):
        for ax in (bar_ax, cum_ax):
            ax.axvline(top_k - 0.5, color="tab:purple", linestyle=":", linewidth=1.5,
                       label=f"top-k: the first k = {top_k} tokens" if ax is cum_ax else None)
    cum_ax.set(xlabel="next token (most likely first)", ylabel="cumulative probability",
               ylim=(0, 1.05))
    cum_ax.legend(fontsize=9, loc="lower right")
    cum_ax.set_xticks(x, [labels[i] for i in shown], rotation=90, fontsize=9)
    fig.tight_layout()
    return fig, drawn


def draw_reference_band(ax: Axes, band: Mapping[str, Any]) -> None:
    """Shade the band's training loss (min to max over seeds) and mark its validation range."""
    train = band["train_loss"]
    ax.fill_between(band["train_steps"], train["min"], train["max"], color="tab:green",
                    alpha=0.25, lw=0, label=f"reference: {len(band['seeds'])} seeds, "
                    f"mean of {band['train_block']} steps (min to max)")
    if "val_loss" in band:
        val = band["val_loss"]
        ax.vlines(band["eval_steps"], val["min"], val["max"], color="tab:green", lw=6,
                  alpha=0.6, label="reference validation (min to max)")


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
        band: Mapping[str, Any] | None = None,
    ) -> None:
        """band: a reference band (llama_edu.loss_report.load_band()), drawn behind the curves."""
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
        if band is not None:
            draw_reference_band(self._ax, band)
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
