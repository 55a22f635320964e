"""The sampling explorer's pure function (llama_edu.viz.sampling_figure, chapter 10)."""


import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from llama_edu import viz  # noqa: E402
from llama_edu.generate import next_token_distribution  # noqa: E402

LOGITS = torch.tensor([2.0, -1.0, 0.5, 3.0, 1.0, 0.0, -2.0, 1.5])
LABELS = ["a", "b", "c", "d", "e", "f", "g", "h"]
BY_PROBABILITY = [3, 0, 7, 4, 2, 5, 1, 6]  # ids from the largest logit to the smallest


# every test here fails on a warning while plotting and closes its figures (conftest.py)
pytestmark = pytest.mark.usefixtures("strict_plotting")


def bars(fig: Figure) -> tuple[list, list]:
    """The grey bars (before filtering) and the coloured bars (after), left to right."""
    patches = fig.axes[0].patches
    half = len(patches) // 2
    return list(patches[:half]), list(patches[half:])


def test_returns_a_figure_and_an_int_without_touching_pyplot():
    fig, drawn = viz.sampling_figure(LOGITS, LABELS, temperature=0.7, top_k=3, top_p=0.9)
    assert isinstance(fig, Figure) and isinstance(drawn, int)
    assert plt.get_fignums() == []
    ax = fig.axes[0]
    assert ax.get_xlabel() == "next token (most likely first, at T = 1)"
    assert ax.get_ylabel() == "probability"
    assert ax.get_legend() is not None and len(ax.get_legend().get_texts()) == 3


def test_bars_show_the_distribution_before_and_after_filtering():
    fig, drawn = viz.sampling_figure(LOGITS, LABELS, temperature=0.5, top_k=4, n_show=5)
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == [LABELS[i] for i in BY_PROBABILITY[:5]]
    grey, coloured = bars(fig)
    before = torch.softmax(LOGITS, dim=-1)
    after = next_token_distribution(LOGITS, 0.5, 4)
    shown = BY_PROBABILITY[:5]
    heights_before = torch.tensor([b.get_height() for b in grey], dtype=torch.float)
    heights_after = torch.tensor([b.get_height() for b in coloured], dtype=torch.float)
    torch.testing.assert_close(heights_before, before[shown])
    torch.testing.assert_close(heights_after, after[shown])
    assert heights_after[4] == 0  # the 5th most likely token is outside the top 4
    top = max(heights_before.max(), heights_after.max()).item()
    assert top < fig.axes[0].get_ylim()[1] <= 1.05  # every bar fits, the scale follows them
    red = [i for i, b in enumerate(coloured) if b.get_facecolor() == to_rgba("tab:red")]
    blue = [i for i, b in enumerate(coloured) if b.get_facecolor() == to_rgba("tab:blue")]
    assert drawn in shown and red == [shown.index(drawn)]
    assert sorted(red + blue) == list(range(5))


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
        ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
        assert ticks[:3] == ["t0", "t1", "t2"]  # ties are shown in id order
        if drawn > 2:
            seen_outside = True
            assert ticks == ["t0", "t1", "t2", f"t{drawn}"]
            grey, coloured = bars(fig)
            assert len(grey) == len(coloured) == 4
        else:
            assert len(ticks) == 3
    assert seen_outside


def test_n_show_larger_than_the_vocabulary_shows_every_token():
    fig, _ = viz.sampling_figure(LOGITS, LABELS, n_show=100)
    assert len(fig.axes[0].get_xticklabels()) == len(LABELS)


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
