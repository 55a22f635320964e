"""Plots and widget helpers for the positions (04) and attention (05) chapters.

Every function here is pure: it takes numbers or tensors and returns data, an Axes or a Figure.
Functions that return a whole `Figure` build it without pyplot, so that an ipywidgets
`interactive` shows each figure exactly once and nothing is left open in pyplot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

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


def attention_browser_figure(
    attentions: Sequence[torch.Tensor],
    layer: int,
    head: int,
    labels: Sequence[str] | None = None,
    batch: int = 0,
) -> Figure:
    """The layer/head browser's picture: one head's heat map and what the last token looks at."""
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
