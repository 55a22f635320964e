"""Plot and widget helpers of the positions and attention chapters (llama_edu.viz)."""

import io
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from llama_edu import viz  # noqa: E402
from llama_edu.attention import Attention, causal_mask  # noqa: E402
from llama_edu.rope import apply_rope, rope_cos_sin, rope_frequencies  # noqa: E402

WORDS = ["the", "cat", "sat", "down"]


# every test here fails on a warning while plotting and closes its figures (conftest.py)
pytestmark = pytest.mark.usefixtures("strict_plotting")


def causal_weights(n: int = 4) -> torch.Tensor:
    scores = torch.randn(n, n, generator=torch.Generator().manual_seed(0)) + causal_mask(n)
    return torch.softmax(scores, dim=-1)


# --- attention_heatmap ------------------------------------------------------------------------


def test_heatmap_labels_axes_ticks_and_colour_bar():
    weights = causal_weights()
    ax = viz.attention_heatmap(weights, WORDS, title="untrained head")
    assert ax.get_xlabel() == "key position (token)"
    assert ax.get_ylabel() == "query position (token)"
    assert ax.get_title() == "untrained head"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0: the", "1: cat", "2: sat", "3: down"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0: the", "1: cat", "2: sat", "3: down"]
    image = ax.images[0]
    assert image.get_array().shape == (4, 4)
    torch.testing.assert_close(torch.as_tensor(image.get_array().data), weights)
    assert image.get_clim() == (0.0, 1.0)
    colorbars = [a for a in ax.figure.axes if a is not ax]
    assert len(colorbars) == 1 and colorbars[0].get_ylabel() == "attention weight"


def test_heatmap_draws_into_a_given_axes_and_handles_a_kv_cache_shape():
    fig, ax = plt.subplots()
    weights = torch.softmax(causal_mask(2, start_pos=3), dim=-1)  # 2 queries, 5 keys
    out = viz.attention_heatmap(weights, ["new1", "new2"], [f"k{i}" for i in range(5)], ax=ax,
                                colorbar=False)
    assert out is ax and len(fig.axes) == 1
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "4: k4"
    # without key labels and with a different number of keys, the keys get plain indices
    ax2 = viz.attention_heatmap(weights, ["new1", "new2"])
    assert [t.get_text() for t in ax2.get_xticklabels()] == ["0", "1", "2", "3", "4"]


def test_heatmap_rejects_wrong_shapes_and_label_counts():
    with pytest.raises(ValueError, match="queries, keys"):
        viz.attention_heatmap(torch.rand(1, 2, 3, 3))
    with pytest.raises(ValueError, match="3 entries"):
        viz.attention_heatmap(causal_weights(), ["a", "b", "c"], WORDS)


# --- RoPE score by distance ---------------------------------------------------------------------


def test_scores_of_all_ones_are_a_sum_of_cosines():
    scores = viz.rope_scores_by_distance(16, 10000.0, 50)
    assert scores.shape == (51,)
    freqs = rope_frequencies(16, 10000.0).double()
    distance = torch.arange(51).double()
    by_formula = 2 * torch.cos(distance[:, None] * freqs).sum(-1)  # each pair (1,1)·(1,1) = 2
    torch.testing.assert_close(scores.double(), by_formula, atol=1e-4, rtol=1e-5)
    assert scores[0].item() == pytest.approx(16.0)


def test_scores_depend_only_on_the_distance():
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(8, generator=gen), torch.randn(8, generator=gen)
    scores = viz.rope_scores_by_distance(8, 100.0, 6, q, k)
    # the same q and k rotated at positions (10 + d, 10) give the same score as (d, 0)
    for d in range(7):
        rq = apply_rope(q.expand(1, 1, 1, 8), start_pos=10 + d, theta=100.0)[0, 0, 0]
        rk = apply_rope(k.expand(1, 1, 1, 8), start_pos=10, theta=100.0)[0, 0, 0]
        assert (rq @ rk).item() == pytest.approx(scores[d].item(), abs=1e-4)


def test_a_larger_theta_decays_more_slowly():
    slow = viz.rope_scores_by_distance(128, 500000.0, 2000)[100:].abs().mean()
    fast = viz.rope_scores_by_distance(128, 10000.0, 2000)[100:].abs().mean()
    assert slow > fast


def test_scores_reject_bad_arguments():
    with pytest.raises(ValueError, match="max_distance"):
        viz.rope_scores_by_distance(8, 1e4, -1)
    with pytest.raises(ValueError, match="length head_dim"):
        viz.rope_scores_by_distance(8, 1e4, 3, q=torch.ones(6))


# --- the RoPE slider --------------------------------------------------------------------------


@pytest.mark.parametrize(("position", "pair"), [(0, 0), (1, 0), (7, 3), (100, 31)])
def test_rotate_2d_demo_turns_the_pair_by_position_times_frequency(position, pair):
    demo = viz.rotate_2d_demo(position, 10000.0, 64, pair)
    frequency = 10000.0 ** (-2 * pair / 64)
    assert demo.frequency == pytest.approx(frequency, rel=1e-6)
    assert demo.angle == pytest.approx(position * frequency, rel=1e-6)
    assert demo.path.shape == (position + 1, 2)
    angle = torch.tensor(demo.angle)
    torch.testing.assert_close(demo.rotated, torch.stack([angle.cos(), angle.sin()]),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(demo.path.norm(dim=-1), torch.ones(position + 1))


def test_rotate_2d_demo_rejects_bad_arguments():
    with pytest.raises(ValueError, match="pair"):
        viz.rotate_2d_demo(3, 1e4, 8, 4)
    with pytest.raises(ValueError, match="position"):
        viz.rotate_2d_demo(-1, 1e4, 8, 0)


def test_rope_rotation_figure_has_labelled_panels():
    fig = viz.rope_rotation_figure(position=5, theta=500000.0, head_dim=16, pair=2)
    assert isinstance(fig, Figure) and not plt.get_fignums()  # not registered with pyplot
    circle, bars = fig.axes
    assert "position 5" in circle.get_title() and "pair 2" in circle.get_title()
    assert circle.get_xlabel() and circle.get_ylabel()
    assert "theta=500000" in bars.get_title()
    assert bars.get_xlabel() == "pair index i" and "radians" in bars.get_ylabel()
    heights = [patch.get_height() for patch in bars.patches]
    expected = (5 * rope_frequencies(16, 500000.0).double()) % (2 * math.pi)
    assert heights == pytest.approx(expected.tolist(), rel=1e-6)


# --- attention of every head, and the layer/head browser ------------------------------------


def small_attention_weights(seq: int = 4) -> torch.Tensor:
    torch.manual_seed(0)
    module = Attention(dim=16, n_heads=4, n_kv_heads=2)
    x = torch.randn(1, seq, 16, generator=torch.Generator().manual_seed(0))
    cos, sin = rope_cos_sin(module.head_dim, seq)
    with torch.no_grad():
        _, weights = module(x, cos, sin, causal_mask(seq), return_weights=True)
    return weights  # (1, 4, seq, seq)


def test_attention_grid_draws_one_map_per_head():
    weights = small_attention_weights()
    fig = viz.attention_grid(weights[0], WORDS)
    heat_maps = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in heat_maps] == ["head 0", "head 1", "head 2", "head 3"]
    assert len(fig.axes) == 5 and fig.axes[-1].get_ylabel() == "attention weight"
    with pytest.raises(ValueError, match="heads, queries, keys"):
        viz.attention_grid(weights)


def test_attention_browser_shows_the_chosen_layer_and_head():
    attentions = [small_attention_weights(), small_attention_weights().flip(1)]
    fig = viz.attention_browser_figure(attentions, layer=1, head=2, labels=WORDS)
    heat, bars = fig.axes[0], fig.axes[1]
    assert heat.get_title() == "layer 1, head 2"
    torch.testing.assert_close(torch.as_tensor(heat.images[0].get_array().data),
                               attentions[1][0, 2])
    heights = torch.tensor([patch.get_height() for patch in bars.patches], dtype=torch.float32)
    torch.testing.assert_close(heights, attentions[1][0, 2, -1])
    assert "3: down" in bars.get_title() and bars.get_ylabel() == "attention weight"


@pytest.mark.parametrize(("layer", "head", "match"), [(2, 0, "layer"), (0, 4, "head")])
def test_attention_browser_rejects_out_of_range_choices(layer, head, match):
    with pytest.raises(ValueError, match=match):
        viz.attention_browser_figure([small_attention_weights()] * 2, layer, head)


# --- LiveLossPlot -----------------------------------------------------------------------------


def test_live_loss_plot_redraws_every_n_steps_and_at_evaluations():
    plot = viz.LiveLossPlot(max_steps=30, max_loss=7.0, every=10)
    first = plot.png()
    assert first.startswith(b"\x89PNG")
    redrawn = []
    for step in range(1, 31):
        record = {"step": step, "train_loss": 6.0 - 0.1 * step}
        if step in (15, 30):
            record["val_loss"] = 5.0
        redrawn.append(plot(record))
    assert [s for s, done in enumerate(redrawn, start=1) if done] == [10, 15, 20, 30]
    assert plot.redraws == 4 and plot.steps == list(range(1, 31))
    assert (plot.val_steps, plot.val_losses) == ([15, 30], [5.0, 5.0])
    assert plot.png() != first  # the curve is painted on the saved background


def grey_pixels(png: bytes) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32))


def test_live_loss_plot_draws_the_line_inside_the_axes():
    plot = viz.LiveLossPlot(max_steps=10, max_loss=4.0, every=1)
    empty = grey_pixels(plot.png())
    plot({"step": 1, "train_loss": 2.0})
    plot({"step": 10, "train_loss": 2.0})  # a flat line at half height
    rows = (grey_pixels(plot.png()) != empty).nonzero()[:, 0].float()
    assert len(rows) > 100  # a line of many pixels
    assert rows.std() < 3  # all on one horizontal line
    assert 0.3 * len(empty) < rows.mean() < 0.7 * len(empty)  # halfway up the axes


@pytest.mark.parametrize("bad", [dict(max_steps=0), dict(every=0), dict(max_loss=0.0)])
def test_live_loss_plot_refuses_bad_sizes(bad):
    with pytest.raises(ValueError, match="need max_steps"):
        viz.LiveLossPlot(**{"max_steps": 10, "max_loss": 1.0, **bad})
