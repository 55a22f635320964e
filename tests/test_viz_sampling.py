"""The sampling explorer's pure function (llama_edu.viz.sampling_figure, chapter 10)."""


import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from llama_edu import viz  # noqa: E402
from llama_edu.generate import (  # noqa: E402
    next_token_distribution,
    top_k_filter,
    top_p_filter,
)

LOGITS = torch.tensor([2.0, -1.0, 0.5, 3.0, 1.0, 0.0, -2.0, 1.5])
LABELS = ["a", "b", "c", "d", "e", "f", "g", "h"]
BY_PROBABILITY = [3, 0, 7, 4, 2, 5, 1, 6]  # ids from the largest logit to the smallest


# every test here fails on a warning while plotting and closes its figures (conftest.py)
pytestmark = pytest.mark.usefixtures("strict_plotting")


def bars(fig: Figure) -> list:
    """The probability bars of the upper panel, left to right (one per shown token)."""
    return list(fig.axes[0].patches)


def hatched(fig: Figure) -> list[int]:
    """Positions (left to right) of the hatched bars: the tokens the filters remove."""
    return [i for i, b in enumerate(bars(fig)) if b.get_hatch()]


def lines_at(ax, horizontal: bool) -> list[float]:
    """The y of every horizontal (or x of every vertical) straight line drawn on ax."""
    found = []
    for line in ax.get_lines():
        xs, ys = line.get_xdata(), line.get_ydata()
        if len(xs) == 2 and horizontal and ys[0] == ys[1] and tuple(xs) == (0, 1):
            found.append(float(ys[0]))
        if len(xs) == 2 and not horizontal and xs[0] == xs[1] and tuple(ys) == (0, 1):
            found.append(float(xs[0]))
    return found


def removed_by_the_filters(logits, temperature, top_k, top_p) -> set[int]:
    """Ids that top_k_filter or top_p_filter set to -inf or 0, computed here step by step."""
    scaled = (logits - logits.max()) / temperature
    if top_k is not None:
        scaled = top_k_filter(scaled, top_k)
    probs = torch.softmax(scaled, dim=-1)
    if top_p is not None:
        probs = top_p_filter(probs, top_p)
    return set((probs == 0).nonzero().flatten().tolist())


def test_returns_a_figure_and_an_int_without_touching_pyplot():
    fig, drawn = viz.sampling_figure(LOGITS, LABELS, temperature=0.7, top_k=3, top_p=0.9)
    assert isinstance(fig, Figure) and isinstance(drawn, int)
    assert plt.get_fignums() == []
    bar_ax, cum_ax = fig.axes
    assert bar_ax.get_ylabel() == "probability at T = 0.7"
    assert cum_ax.get_xlabel() == "next token (most likely first)"
    assert cum_ax.get_ylabel() == "cumulative probability"
    legend = [t.get_text() for t in bar_ax.get_legend().get_texts()]
    assert legend == ["kept", "removed by top-k or top-p", "the sampled token",
                      "after renormalising"]
    assert cum_ax.get_legend() is not None


def test_shows_thirty_candidates_by_default():
    logits = torch.linspace(3.0, -3.0, 50)
    labels = [f"t{i}" for i in range(50)]
    fig, drawn = viz.sampling_figure(logits, labels, top_k=5)
    assert drawn < 5 and len(bars(fig)) == 30
    ticks = [t.get_text() for t in fig.axes[1].get_xticklabels()]
    assert ticks == labels[:30]
    assert all(t.get_fontsize() >= 9 for t in fig.axes[1].get_xticklabels())


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"),
    [(1.0, 3, None), (1.0, None, 0.6), (0.5, 4, 0.8), (2.0, 6, 0.5), (1.3, None, None)],
)
def test_hatched_bars_are_exactly_the_tokens_the_filters_remove(temperature, top_k, top_p):
    fig, drawn = viz.sampling_figure(LOGITS, LABELS, temperature, top_k, top_p)
    removed = removed_by_the_filters(LOGITS, temperature, top_k, top_p)
    assert len(bars(fig)) == len(LABELS)  # n_show 30 > V: every token is shown
    assert {BY_PROBABILITY[i] for i in hatched(fig)} == removed
    assert drawn not in removed
    tempered = torch.softmax(LOGITS / temperature, dim=-1)[BY_PROBABILITY]
    heights = torch.tensor([b.get_height() for b in bars(fig)], dtype=torch.float)
    torch.testing.assert_close(heights, tempered)  # removed tokens keep their height, hatched
    kept_colours = {bars(fig)[i].get_facecolor() for i in range(len(LABELS))
                    if i not in hatched(fig) and BY_PROBABILITY[i] != drawn}
    assert kept_colours <= {to_rgba("tab:blue")}
    assert bars(fig)[BY_PROBABILITY.index(drawn)].get_facecolor() == to_rgba("tab:red")


def test_the_black_ticks_are_the_renormalised_probabilities_of_the_kept_tokens():
    fig, _ = viz.sampling_figure(LOGITS, LABELS, temperature=0.5, top_k=4, top_p=0.9)
    after = next_token_distribution(LOGITS, 0.5, 4, 0.9)
    ticks = next(line for line in fig.axes[0].get_lines() if line.get_marker() == "_")
    kept = [i for i, token in enumerate(BY_PROBABILITY) if after[token] > 0]
    assert list(ticks.get_xdata()) == kept
    torch.testing.assert_close(torch.tensor(ticks.get_ydata(), dtype=torch.float),
                               after[[BY_PROBABILITY[i] for i in kept]])


def test_p_and_k_are_marked_on_the_cumulative_curve():
    fig, _ = viz.sampling_figure(LOGITS, LABELS, temperature=1.0, top_k=5, top_p=0.7)
    bar_ax, cum_ax = fig.axes
    assert lines_at(cum_ax, horizontal=True) == [0.7]
    assert lines_at(cum_ax, horizontal=False) == [4.5]  # between the 5th and the 6th token
    assert lines_at(bar_ax, horizontal=False) == [4.5]
    curve = next(line for line in cum_ax.get_lines() if line.get_marker() == "o")
    seen_by_top_p = next_token_distribution(LOGITS, 1.0, 5)[BY_PROBABILITY]
    torch.testing.assert_close(torch.tensor(curve.get_ydata(), dtype=torch.float),
                               seen_by_top_p.cumsum(dim=0))
    fig, _ = viz.sampling_figure(LOGITS, LABELS)  # both filters off: no markers
    assert lines_at(fig.axes[1], horizontal=True) == []
    assert lines_at(fig.axes[1], horizontal=False) == []


def test_bars_show_the_distribution_before_and_after_filtering():
    fig, drawn = viz.sampling_figure(LOGITS, LABELS, temperature=0.5, top_k=4, n_show=5)
    ticks = [t.get_text() for t in fig.axes[1].get_xticklabels()]
    assert ticks == [LABELS[i] for i in BY_PROBABILITY[:5]]
    shown = BY_PROBABILITY[:5]
    heights = torch.tensor([b.get_height() for b in bars(fig)], dtype=torch.float)
    torch.testing.assert_close(heights, torch.softmax(LOGITS / 0.5, dim=-1)[shown])
    assert hatched(fig) == [4]  # the 5th most likely token is outside the top 4
    top = max(heights.max(), next_token_distribution(LOGITS, 0.5, 4).max()).item()
    assert top < fig.axes[0].get_ylim()[1] <= 1.05  # every bar and tick fits
    assert drawn in shown[:4]


def test_the_drawn_id_is_a_seeded_multinomial_draw_from_the_filtered_distribution():
    after = next_token_distribution(LOGITS, 1.3, None, 0.8)
    for seed in range(20):
        _, drawn = viz.sampling_figure(LOGITS, LABELS, temperature=1.3, top_p=0.8, seed=seed)
        expected = torch.multinomial(after, 1, generator=torch.Generator().manual_seed(seed))
        assert drawn == int(expected) and after[drawn] > 0
    again = [viz.sampling_figure(LOGITS, LABELS, 1.3, None, 0.8, seed=7)[1] for _ in range(3)]
    assert len(set(again)) == 1


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(0.0, None, None), (1.0, 1, None), (2.0, None, 0.01)]
)
def test_greedy_settings_always_give_the_most_likely_token(temperature, top_k, top_p):
    for seed in range(5):
        fig, drawn = viz.sampling_figure(LOGITS, LABELS, temperature, top_k, top_p, seed=seed)
        assert drawn == 3
        assert "1 of 8 tokens kept" in fig.axes[0].get_title()
        assert fig.axes[0].get_title().endswith("sampled d")


def test_title_names_the_settings_and_the_kept_count():
    fig, _ = viz.sampling_figure(LOGITS, LABELS, temperature=0.7, top_k=5, top_p=None)
    title = fig.axes[0].get_title()
    assert title.startswith("T = 0.7, top-k 5, top-p off: 5 of 8 tokens kept; sampled ")
    fig, _ = viz.sampling_figure(LOGITS, LABELS)
    assert fig.axes[0].get_title().startswith("T = 1, top-k off, top-p off: 8 of 8 tokens kept")


def test_a_drawn_token_outside_the_shown_ones_is_added_at_the_end():
    flat = torch.zeros(50)
    flat[0] = 0.5  # id 0 is the most likely, the other 49 tie
    labels = [f"t{i}" for i in range(50)]
    seen_outside = False
    for seed in range(10):
        fig, drawn = viz.sampling_figure(flat, labels, seed=seed, n_show=3)
        ticks = [t.get_text() for t in fig.axes[1].get_xticklabels()]
        assert ticks[:3] == ["t0", "t1", "t2"]  # ties are shown in id order
        if drawn > 2:
            seen_outside = True
            assert ticks == ["t0", "t1", "t2", f"t{drawn}"]
            assert len(bars(fig)) == 4
            assert bars(fig)[3].get_facecolor() == to_rgba("tab:red")
        else:
            assert len(ticks) == 3
    assert seen_outside


def test_n_show_larger_than_the_vocabulary_shows_every_token():
    fig, _ = viz.sampling_figure(LOGITS, LABELS, n_show=100)
    assert len(fig.axes[1].get_xticklabels()) == len(LABELS) == len(bars(fig))


def test_accepts_a_row_that_requires_grad_and_float16():
    row = LOGITS.clone().requires_grad_(True)
    _, drawn = viz.sampling_figure(row, LABELS, temperature=0.0)
    assert drawn == 3
    _, drawn = viz.sampling_figure(LOGITS.half(), LABELS, temperature=0.0)
    assert drawn == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"logits": LOGITS[None]}, "one row of logits"),
        ({"labels": LABELS[:-1]}, "7 entries"),
        ({"n_show": 0}, "n_show"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 1.5}, "top_p"),
    ],
)
def test_rejects_bad_inputs_with_a_clear_message(kwargs, message):
    arguments = {"logits": LOGITS, "labels": LABELS} | kwargs
    with pytest.raises(ValueError, match=message):
        viz.sampling_figure(**arguments)
