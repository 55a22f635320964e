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
    circle, pairs = fig.axes[0], fig.axes[1]
    assert "position 5" in circle.get_title() and "pair 2" in circle.get_title()
    assert circle.get_xlabel() and circle.get_ylabel()
    assert "theta=500000" in pairs.get_title() and "all 8 pairs" in pairs.get_title()
    assert pairs.get_xlabel() and pairs.get_ylabel()
    # every pair is one point at the angle position * omega_i, on a ring that grows with i
    points = torch.as_tensor(pairs.collections[0].get_offsets().data)
    assert points.shape == (8, 2)
    angles = torch.atan2(points[:, 1], points[:, 0]) % (2 * math.pi)
    expected = (5 * rope_frequencies(16, 500000.0).double()) % (2 * math.pi)
    torch.testing.assert_close(angles.double(), expected, atol=1e-5, rtol=0)
    radii = points.norm(dim=-1)
    assert torch.all(radii[1:] > radii[:-1])  # inner ring: pair 0, the fastest
    assert fig.axes[-1].get_ylabel().startswith("pair index")  # the colour bar


def test_rope_score_figure_redraws_the_score_for_theta():
    fig = viz.rope_score_figure(theta=500000.0, head_dim=16, max_distance=40)
    assert isinstance(fig, Figure) and not plt.get_fignums()
    (ax,) = fig.axes
    reference, chosen = ax.lines[0], ax.lines[1]
    assert chosen.get_label() == "theta = 500,000" and "10,000" in reference.get_label()
    expected = viz.rope_scores_by_distance(16, 500000.0, 40)[1:]
    torch.testing.assert_close(torch.as_tensor(chosen.get_ydata()), expected)
    assert list(chosen.get_xdata()) == list(range(1, 41))
    assert "distance" in ax.get_xlabel() and "score" in ax.get_ylabel()


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
    # one shared x label under the row instead of one per map (they overlapped)
    assert all(ax.get_xlabel() == "" for ax in heat_maps)
    assert fig.get_supxlabel() == "key position (token)"
    assert not fig.legends  # no mask given, nothing is marked as masked
    with pytest.raises(ValueError, match="heads, queries, keys"):
        viz.attention_grid(weights)


def hatched_cells(ax) -> set[tuple[int, int]]:
    """(query, key) of every hatched rectangle drawn on a heat map."""
    return {
        (round(p.get_y() + 0.5), round(p.get_x() + 0.5)) for p in ax.patches if p.get_hatch()
    }


def test_masked_cells_are_hatched_not_drawn_as_zero_weight():
    weights = causal_weights()
    ax = viz.attention_heatmap(weights, WORDS, mask=causal_mask(4))
    future = {(i, j) for i in range(4) for j in range(4) if j > i}
    assert hatched_cells(ax) == future
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["masked (future)"]
    # a boolean mask works too; without a mask nothing is hatched and there is no legend
    ax2 = viz.attention_heatmap(weights, WORDS, mask=causal_mask(4).isinf(), colorbar=False)
    assert hatched_cells(ax2) == future
    ax3 = viz.attention_heatmap(weights, WORDS, colorbar=False)
    assert hatched_cells(ax3) == set() and ax3.get_legend() is None


def test_masked_cells_with_a_kv_cache_and_a_wrong_mask_shape():
    weights = torch.softmax(causal_mask(2, start_pos=3), dim=-1)  # 2 new queries, 5 keys
    ax = viz.attention_heatmap(weights, mask=causal_mask(2, start_pos=3), colorbar=False)
    assert hatched_cells(ax) == {(0, 4)}
    with pytest.raises(ValueError, match="mask has shape"):
        viz.attention_heatmap(weights, mask=causal_mask(5))


def test_attention_grid_hatches_masked_cells_in_every_map():
    weights = small_attention_weights()[0]
    fig = viz.attention_grid(weights, WORDS, mask=causal_mask(4))
    heat_maps = [ax for ax in fig.axes if ax.images]
    assert all(len(hatched_cells(ax)) == 6 for ax in heat_maps)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["masked (future)"]


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


def test_live_loss_plot_shades_the_reference_band_behind_the_curves():
    band = {"seeds": [1, 2], "train_block": 10, "train_steps": [10, 20],
            "train_loss": {"min": [1.0, 1.0], "median": [1.5, 1.5], "max": [2.0, 2.0]},
            "eval_steps": [20], "val_loss": {"min": [1.0], "median": [1.5], "max": [2.0]}}
    plain = grey_pixels(viz.LiveLossPlot(max_steps=20, max_loss=4.0).png())
    shaded = grey_pixels(viz.LiveLossPlot(max_steps=20, max_loss=4.0, band=band).png())
    rows = (shaded != plain).nonzero()[:, 0].float()
    height = len(plain)
    # the shading covers loss 1 to 2 of 0 to 4: the middle quarter of the axes, not the rest
    assert len(rows) > 1000
    assert 0.35 * height < rows.median() < 0.65 * height
    labels = [t.get_text() for t in
              viz.LiveLossPlot(max_steps=20, max_loss=4.0, band=band)._ax.get_legend().get_texts()]
    assert "reference: 2 seeds, mean of 10 steps (min to max)" in labels


@pytest.mark.parametrize("bad", [dict(max_steps=0), dict(every=0), dict(max_loss=0.0)])
def test_live_loss_plot_refuses_bad_sizes(bad):
    with pytest.raises(ValueError, match="need max_steps"):
        viz.LiveLossPlot(**{"max_steps": 10, "max_loss": 1.0, **bad})
