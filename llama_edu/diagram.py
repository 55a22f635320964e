"""Static diagrams of the Llama architecture, drawn with matplotlib boxes and arrows.

They replace Mermaid diagrams, which render only in some viewers: a matplotlib figure stored as a
PNG output shows on GitHub, in Colab, in JupyterLab of any version and in a PDF. Every function
here is pure: it builds a new `Figure` without pyplot and returns it.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyBboxPatch

from .model import ModelArgs

MAIN = "#1f4e79"  # arrows and box edges
NORM_FILL = "#fde9c8"
ATTENTION_FILL = "#dbe9f6"
FFN_FILL = "#e2f0d9"
PLAIN_FILL = "#f2f2f2"


def _shape_names(args: ModelArgs | None) -> dict[str, str]:
    """Axis names for the shape labels; with args, 'dim' becomes 'dim=4096' and so on."""
    names = ["dim", "n_heads", "n_kv_heads", "head_dim", "hidden_dim", "vocab_size"]
    if args is None:
        return {name: name for name in names} | {"batch": "batch", "seq": "seq"}
    values = {
        "dim": args.dim,
        "n_heads": args.n_heads,
        "n_kv_heads": args.kv_heads,
        "head_dim": args.head_dim,
        "hidden_dim": args.hidden_dim,
        "vocab_size": args.vocab_size,
    }
    return {name: f"{name}={value}" for name, value in values.items()} | {
        "batch": "batch",
        "seq": "seq",
    }


def _box(ax: Axes, x: float, y: float, w: float, h: float, lines: Sequence[str], fill: str) -> None:
    """A rounded box centred at (x, y); the first line is bold, the others smaller."""
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=fill,
            edgecolor=MAIN,
            linewidth=1.2,
        )
    )
    title, *rest = lines
    n = len(lines)
    step = 0.24
    top = y + step * (n - 1) / 2
    ax.text(x, top, title, ha="center", va="center", fontsize=10, fontweight="bold")
    for i, line in enumerate(rest, start=1):
        ax.text(x, top - i * step, line, ha="center", va="center", fontsize=8.5)


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float]) -> None:
    """A straight arrow from start to end."""
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops={"arrowstyle": "-|>", "color": MAIN, "lw": 1.3, "shrinkA": 0, "shrinkB": 0},
    )


def _plus(ax: Axes, x: float, y: float, r: float = 0.17) -> None:
    """The circle with a + where a residual branch is added back."""
    ax.add_patch(Circle((x, y), r, facecolor="white", edgecolor=MAIN, linewidth=1.3))
    ax.text(x, y, "+", ha="center", va="center", fontsize=13, fontweight="bold", color=MAIN)


def _residual(
    ax: Axes, x_main: float, y_from: float, y_to: float, x_side: float, r: float = 0.17
) -> None:
    """The skip path: from the main line at y_from, out to x_side, down, and into the + at y_to."""
    ax.plot([x_main, x_side, x_side], [y_from, y_from, y_to], color=MAIN, lw=1.3)
    ax.plot([x_main], [y_from], marker="o", markersize=4, color=MAIN)
    _arrow(ax, (x_side, y_to), (x_main - r, y_to))
    ax.text(
        x_side - 0.12,
        (y_from + y_to) / 2,
        "residual (skip)",
        rotation=90,
        ha="right",
        va="center",
        fontsize=8.5,
        color=MAIN,
    )


def _blank_axes(fig: Figure, width: float, height: float) -> Axes:
    """One axes filling the figure, in units of inches, with no ticks or frame."""
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set(xlim=(0, width), ylim=(0, height))
    ax.set_axis_off()
    return ax


def llama_block_figure(args: ModelArgs | None = None) -> Figure:
    """Draw the Llama decoder, from token ids to logits, with the tensor shape at every step."""
    if args is not None and not isinstance(args, ModelArgs):
        raise TypeError(
            "llama_block_figure expects a llama_edu.model.ModelArgs or None, got "
            f"{type(args).__name__}; for a preset use ModelArgs.from_name('tiny')."
        )
    n = _shape_names(args)

    def shape(*axes: str) -> str:
        return "(" + ", ".join(n[a] for a in axes) + ")"

    width, height = 8.0, 11.0
    fig = Figure(figsize=(width, height))
    ax = _blank_axes(fig, width, height)
    x, w, side = 4.6, 5.8, 1.05
    layers = "n_layers" if args is None else f"n_layers={args.n_layers}"
    title = "A Llama decoder and the shape of every tensor"
    ax.text(width / 2, 10.75, title, ha="center", va="center", fontsize=12, fontweight="bold")

    # (centre y, height, lines, fill) from the token ids down to the logits
    _box(ax, x, 10.2, w, 0.55, ["token ids (integers)", shape("batch", "seq")], PLAIN_FILL)
    _box(
        ax,
        x,
        9.3,
        w,
        0.6,
        ["tok_embeddings: one table row per token", "x: " + shape("batch", "seq", "dim")],
        PLAIN_FILL,
    )
    _arrow(ax, (x, 9.925), (x, 9.6))

    # the block, repeated
    top, bottom = 8.8, 2.55
    ax.add_patch(
        FancyBboxPatch(
            (0.25, bottom),
            width - 0.4,
            top - bottom,
            boxstyle="round,pad=0.02,rounding_size=0.15",
            facecolor="none",
            edgecolor="gray",
            linestyle="--",
            linewidth=1.2,
        )
    )
    ax.text(
        0.4,
        top - 0.17,
        f"Transformer block (pre-norm), repeated {layers} times",
        ha="left",
        va="center",
        fontsize=9,
        style="italic",
        color="dimgray",
    )
    _arrow(ax, (x, 9.0), (x, 8.1))
    _box(ax, x, 7.85, w, 0.5, ["attention_norm: RMSNorm", shape("batch", "seq", "dim")], NORM_FILL)
    _arrow(ax, (x, 7.6), (x, 7.3))
    _box(
        ax,
        x,
        6.65,
        w,
        1.3,
        [
            "attention: causal, grouped-query heads",
            "q = wq(x): " + shape("batch", "seq", "n_heads", "head_dim"),
            "k = wk(x), v = wv(x): " + shape("batch", "seq", "n_kv_heads", "head_dim"),
            "RoPE rotates q and k; causal mask; softmax",
            "wo(heads joined): " + shape("batch", "seq", "dim"),
        ],
        ATTENTION_FILL,
    )
    _arrow(ax, (x, 6.0), (x, 5.72))
    _plus(ax, x, 5.55)
    _residual(ax, x, 8.45, 5.55, side)
    _arrow(ax, (x, 5.38), (x, 4.95))
    _box(ax, x, 4.7, w, 0.5, ["ffn_norm: RMSNorm", shape("batch", "seq", "dim")], NORM_FILL)
    _arrow(ax, (x, 4.45), (x, 4.15))
    _box(
        ax,
        x,
        3.7,
        w,
        0.9,
        [
            "feed_forward: SwiGLU, w2(silu(w1 x) * w3 x)",
            "w1 x and w3 x: " + shape("batch", "seq", "hidden_dim"),
            "w2 back to " + shape("batch", "seq", "dim"),
        ],
        FFN_FILL,
    )
    _arrow(ax, (x, 3.25), (x, 2.97))
    _plus(ax, x, 2.8)
    _residual(ax, x, 5.17, 2.8, side)

    _arrow(ax, (x, 2.63), (x, 2.1))
    _box(ax, x, 1.85, w, 0.5, ["norm: final RMSNorm", shape("batch", "seq", "dim")], NORM_FILL)
    _arrow(ax, (x, 1.6), (x, 1.35))
    _box(
        ax,
        x,
        1.05,
        w,
        0.6,
        [
            "output: linear layer, dim to vocab_size",
            "logits " + shape("batch", "seq", "vocab_size"),
        ],
        PLAIN_FILL,
    )
    ax.text(
        x,
        0.35,
        "one score per vocabulary entry at every position",
        ha="center",
        va="center",
        fontsize=9,
        style="italic",
    )
    return fig


def norm_placement_figure() -> Figure:
    """Draw a post-norm block (original Transformer) next to a pre-norm block (Llama)."""
    width, height = 8.0, 5.4
    fig = Figure(figsize=(width, height))
    ax = _blank_axes(fig, width, height)
    panels = [
        (
            2.2,
            "post-norm (original Transformer)",
            "next x = Norm(x + F(x))",
            ["F", "+", "Norm"],
        ),
        (
            6.0,
            "pre-norm (Llama)",
            "next x = x + F(Norm(x))",
            ["Norm", "F", "+"],
        ),
    ]
    fills = {"F": ATTENTION_FILL, "Norm": NORM_FILL}
    labels = {
        "F": ["sub-layer F", "attention or feed-forward"],
        "Norm": ["norm", "LayerNorm or RMSNorm"],
    }
    for x, title, formula, steps in panels:
        ax.text(x, 5.15, title, ha="center", va="center", fontsize=11, fontweight="bold")
        ax.text(x, 4.8, formula, ha="center", va="center", fontsize=10, family="monospace")
        _box(ax, x, 4.3, 1.6, 0.4, ["x (stream in)"], PLAIN_FILL)
        ys = [3.45, 2.4, 1.35]
        previous = 4.1
        plus_y = None
        for y, step in zip(ys, steps, strict=True):
            if step == "+":
                _arrow(ax, (x, previous), (x, y + 0.17))
                _plus(ax, x, y)
                plus_y, previous = y, y - 0.17
            else:
                _arrow(ax, (x, previous), (x, y + 0.3))
                _box(ax, x, y, 2.3, 0.6, labels[step], fills[step])
                previous = y - 0.3
        _arrow(ax, (x, previous), (x, 0.62))
        _box(ax, x, 0.42, 1.6, 0.4, ["next x (stream out)"], PLAIN_FILL)
        assert plus_y is not None
        _residual(ax, x, 3.95, plus_y, x - 1.55)
    return fig
