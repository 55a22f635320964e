"""Chapter 11's tools for looking inside a model: head ablation, name mentions, copy scores,
the logit lens, PCA and the figures (llama_edu.attention.ablate_heads,
llama_edu.interpretability and llama_edu.viz)."""

import copy

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from llama_edu import interpretability as interp  # noqa: E402
from llama_edu import viz  # noqa: E402
from llama_edu.attention import ablate_heads, causal_mask  # noqa: E402
from llama_edu.model import Llama, ModelArgs  # noqa: E402
from llama_edu.tokenizer import SentencePieceTokenizer  # noqa: E402
from llama_edu.train import PRETRAINED_DIR  # noqa: E402

STORY = "One day, Mia met a boy named Theo. Theo gave the ball to Mia. The ball rolled away."
NAMES = ["Mia", "Theo", "Leo"]


# every test here fails on a warning while plotting and closes its figures (conftest.py)
pytestmark = pytest.mark.usefixtures("strict_plotting")


@pytest.fixture(scope="module")
def model() -> Llama:
    torch.manual_seed(0)
    args = ModelArgs(dim=32, n_layers=3, n_heads=4, n_kv_heads=2, vocab_size=40, multiple_of=16,
                     max_seq_len=32)
    net = Llama(args).eval()
    with torch.no_grad():  # larger weights than the init, so that every head matters
        for p in net.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return net


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(0, 40, (2, 10), generator=torch.Generator().manual_seed(1))


class WordTokenizer:
    """One token per word or punctuation mark (like a vocabulary where every name is one token)."""

    def __init__(self, text: str) -> None:
        self.words = ["<s>", *sorted(set(text.replace(".", " .").replace(",", " ,").split()))]

    def _split(self, s: str) -> list[str]:
        return s.replace(".", " .").replace(",", " ,").split()

    def encode(self, s: str, bos: bool = False, eos: bool = False) -> list[int]:
        return [0] * bos + [self.words.index(w) for w in self._split(s)]

    def decode(self, ids) -> str:
        words = [self.words[i] for i in ids if i != 0]
        return " ".join(words).replace(" .", ".").replace(" ,", ",")

    def token_text(self, token_id: int) -> str:
        return self.words[token_id] if token_id == 0 else " " + self.words[token_id]


@pytest.fixture(scope="module")
def sp_tokenizer() -> SentencePieceTokenizer:
    return SentencePieceTokenizer(PRETRAINED_DIR / "tokenizer.model")


def no_hooks(model: Llama) -> bool:
    return all(not layer.attention.wo._forward_pre_hooks for layer in model.layers)


# --- ablate_heads -----------------------------------------------------------------------------


def test_ablating_nothing_changes_nothing(model, tokens):
    with torch.no_grad():
        before = model(tokens)
        with ablate_heads(model, []):
            during = model(tokens)
    assert torch.equal(before, during)
    assert no_hooks(model)


def test_ablating_all_heads_of_a_layer_equals_zeroing_its_attention_output(model, tokens):
    layer = 1
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        zeroed.layers[layer].attention.wo.weight.zero_()  # the attention adds nothing
        expected = zeroed(tokens)
        with ablate_heads(model, [(layer, h) for h in range(4)]):
            ablated = model(tokens)
        plain = model(tokens)
    torch.testing.assert_close(ablated, expected)
    assert not torch.allclose(plain, expected, atol=1e-3)  # the layer's attention did matter


@pytest.mark.parametrize("heads", [[(0, 2)], [(2, 1), (0, 3)], [(1, 0), (1, 3), (1, 0)]])
def test_ablating_heads_equals_zeroing_their_columns_of_wo(model, tokens, heads):
    zeroed = copy.deepcopy(model)
    d = model.args.head_dim
    with torch.no_grad():
        for layer, head in heads:
            zeroed.layers[layer].attention.wo.weight[:, head * d : (head + 1) * d] = 0.0
        expected = zeroed(tokens)
        with ablate_heads(model, iter(heads)):  # any iterable, duplicates allowed
            ablated = model(tokens)
            traced = model.trace(tokens, return_attention=True).logits  # the other code path
    torch.testing.assert_close(ablated, expected)
    torch.testing.assert_close(traced, expected, atol=1e-5, rtol=1e-4)
    assert no_hooks(model)


def test_the_model_is_restored_after_an_exception(model, tokens):
    with torch.no_grad():
        before = model(tokens)
        with pytest.raises(RuntimeError, match="stop here"), ablate_heads(model, [(0, 0), (2, 3)]):
            assert not torch.equal(model(tokens), before)
            raise RuntimeError("stop here")
        after = model(tokens)
    assert torch.equal(before, after)
    assert no_hooks(model)


@pytest.mark.parametrize(
    ("heads", "message"),
    [([(3, 0)], "layer 3 does not exist"), ([(0, 4)], "head 4 does not exist"),
     ([(-1, 0)], "layer -1")],
)
def test_bad_heads_are_refused_and_nothing_is_left_behind(model, heads, message):
    with pytest.raises(ValueError, match=message), ablate_heads(model, [(1, 1), *heads]):
        pass
    assert no_hooks(model)


def test_ablate_heads_needs_a_model_with_layers():
    with pytest.raises(TypeError, match="with .layers"), ablate_heads(torch.nn.Linear(2, 2), []):
        pass


# --- token spans and name mentions ------------------------------------------------------------


def test_token_char_spans_cover_the_text(sp_tokenizer):
    ids = sp_tokenizer.encode(STORY, bos=True)
    spans = interp.token_char_spans(sp_tokenizer, ids)
    assert len(spans) == len(ids)
    assert spans[0] == (0, 0)  # <s> adds no characters
    assert all(a == b for (_, a), (b, _) in zip(spans, spans[1:], strict=False))  # no gaps
    assert spans[-1][1] == len(STORY)
    assert "".join(STORY[a:b] for a, b in spans) == STORY


@pytest.mark.parametrize("which", ["sentencepiece", "one token per word"])
def test_find_name_mentions(sp_tokenizer, which):
    tok = sp_tokenizer if which == "sentencepiece" else WordTokenizer(STORY)
    found = interp.find_name_mentions(tok, STORY, NAMES)
    assert found.text == STORY
    assert found.tokens == tok.encode(STORY, bos=True)
    assert set(found.first) == {"Mia", "Theo"}  # Leo is not in the story; "The" is not Theo
    assert [name for name, _ in found.later] == ["Theo", "Mia"]
    spans = interp.token_char_spans(tok, found.tokens)

    def covered(positions: list[int]) -> str:
        return STORY[spans[positions[0]][0] : spans[positions[-1]][1]].strip()

    assert covered(found.first["Mia"]) == "Mia"
    assert covered(found.first["Theo"]) == "Theo"
    assert [covered(p) for _, p in found.later] == ["Theo", "Mia"]
    for _, positions in found.later:
        assert positions == list(range(positions[0], positions[-1] + 1))  # contiguous
        assert positions[0] > max(found.first["Theo"])
    assert len(found.labels) == len(found.tokens) and found.labels[0] == "<s>"
    if which == "one token per word":
        assert all(len(p) == 1 for _, p in found.later)
        assert found.labels[1:3] == ["\u2581One", "\u2581day"]


def test_find_name_mentions_without_bos_and_with_a_bad_name_list(sp_tokenizer):
    found = interp.find_name_mentions(sp_tokenizer, STORY, ["Mia"], bos=False)
    assert found.tokens == sp_tokenizer.encode(STORY)
    assert len(found.later) == 1
    with pytest.raises(ValueError, match="at least one name"):
        interp.find_name_mentions(sp_tokenizer, STORY, [])


def test_stack_tokens_and_copy_target_masks():
    tok = WordTokenizer(STORY + " Leo")
    long = interp.find_name_mentions(tok, STORY, NAMES)
    short = interp.find_name_mentions(tok, "Leo met Leo.", NAMES)
    batch = interp.stack_tokens([long, short], pad_id=0)
    assert batch.shape == (2, len(long.tokens)) and batch.dtype == torch.long
    assert batch[1, : len(short.tokens)].tolist() == short.tokens
    assert (batch[1, len(short.tokens) :] == 0).all()

    copy_mask, other = interp.copy_target_masks([long, short], batch.shape[1])
    assert copy_mask.shape == other.shape == (2, batch.shape[1] - 1)
    # position t predicts token t + 1: the later mentions' tokens, one step earlier
    assert copy_mask[0].nonzero().flatten().tolist() == [p[0] - 1 for _, p in long.later]
    assert copy_mask[1].nonzero().flatten().tolist() == [short.later[0][1][0] - 1]
    assert not (copy_mask & other).any()
    assert (copy_mask | other)[0].all()  # every prediction of the long story is one or the other
    assert (copy_mask | other)[1].sum() == len(short.tokens) - 1  # none on the padding
    with pytest.raises(ValueError, match="more than width"):
        interp.copy_target_masks([long], 3)
    with pytest.raises(ValueError, match="at least one story"):
        interp.stack_tokens([])


# --- copy scores ------------------------------------------------------------------------------


def test_copy_score_by_hand():
    weights = torch.softmax(causal_mask(6), dim=-1)  # row i: 1 / (i + 1) on keys 0..i
    weights = weights.expand(2, 3, 6, 6)
    score = interp.copy_score(weights, first=[1, 2], later_start=5)  # query 4 sees 5 keys
    assert score.shape == (2, 3)
    torch.testing.assert_close(score, torch.full((2, 3), 2 / 5))
    with pytest.raises(ValueError, match="before the later mention"):
        interp.copy_score(weights, [1, 5], 5)
    with pytest.raises(ValueError, match="later_start"):
        interp.copy_score(weights, [1], 7)
    with pytest.raises(ValueError, match="empty"):
        interp.copy_score(weights, [], 4)


def test_copy_head_scores_averages_over_all_later_mentions():
    tok = WordTokenizer(STORY)
    stories = [interp.find_name_mentions(tok, STORY, NAMES),
               interp.find_name_mentions(tok, "Mia met Mia.", NAMES)]
    width = interp.stack_tokens(stories).shape[1]
    gen = torch.Generator().manual_seed(0)
    attentions = [
        torch.softmax(torch.randn(2, 4, width, width, generator=gen) + causal_mask(width), -1)
        for _ in range(3)
    ]
    # head (2, 1) puts all its weight on the first mention of the name it has to predict
    for row, story in enumerate(stories):
        for name, positions in story.later:
            query = positions[0] - 1
            attentions[2][row, 1, query] = 0.0
            attentions[2][row, 1, query, story.first[name]] = 1.0 / len(story.first[name])
    scores = interp.copy_head_scores(attentions, stories)
    assert scores.shape == (3, 4)
    assert scores[2, 1] == pytest.approx(1.0)
    by_hand = torch.zeros(3, 4)
    mentions = [(r, s.first[n], p[0]) for r, s in enumerate(stories) for n, p in s.later]
    for row, first, start in mentions:
        for layer in range(3):
            by_hand[layer] += attentions[layer][row, :, start - 1, first].sum(-1)
    torch.testing.assert_close(scores, by_hand / len(mentions))
    assert len(mentions) == 3
    with pytest.raises(ValueError, match="row j must be story j"):
        interp.copy_head_scores(attentions, stories[:1])
    quiet = [interp.find_name_mentions(tok, "Mia met Theo.", NAMES)]
    with pytest.raises(ValueError, match="nothing to copy"):
        interp.copy_head_scores([a[:1] for a in attentions], quiet)


# --- logit lens, PCA, word vectors ------------------------------------------------------------


def test_logit_lens_of_the_last_stream_is_exactly_the_logits(model, tokens):
    with torch.no_grad():
        trace = model.trace(tokens)
        last = interp.logit_lens(trace.hidden_states[-1], model.norm, model.output)
        every = interp.logit_lens(torch.stack(trace.hidden_states), model.norm, model.output)
    assert torch.equal(last, trace.logits)
    assert every.shape == (model.args.n_layers + 1, *trace.logits.shape)
    torch.testing.assert_close(every[-1], trace.logits)
    torch.testing.assert_close(every[0], model.output(model.norm(model.tok_embeddings(tokens))))


def test_pca_2d_matches_the_covariance_eigenvectors_and_pca_lowrank():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=gen, dtype=torch.float64) * torch.tensor(
        [5.0, 3.0, 1.0, 0.5, 0.2, 0.1], dtype=torch.float64) + 7.0
    out = interp.pca_2d(x)
    assert out.shape == (50, 2) and out.dtype == torch.float64
    torch.testing.assert_close(out.mean(0), torch.zeros(2, dtype=torch.float64))
    centred = x - x.mean(0)
    values, vectors = torch.linalg.eigh(centred.T @ centred)
    expected = centred @ vectors[:, [-1, -2]]
    signs = torch.sign((expected * out).sum(0))
    torch.testing.assert_close(out, expected * signs)
    torch.testing.assert_close(out.pow(2).sum(0), values[[-1, -2]])  # variance in that order
    torch.manual_seed(0)
    _, _, v = torch.pca_lowrank(x, q=6, center=True)
    low = centred @ v[:, :2]
    torch.testing.assert_close(out, low * torch.sign((low * out).sum(0)))


def test_pca_2d_sign_convention_and_errors():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20, 4, generator=gen)
    out = interp.pca_2d(x)
    assert out.dtype == torch.float32
    centred = (x - x.mean(0)).double()
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    for c in range(2):  # each direction is turned so that its largest entry is positive
        direction = vh[c] if vh[c][vh[c].abs().argmax()] > 0 else -vh[c]
        torch.testing.assert_close(out[:, c], (centred @ direction).float())
    torch.testing.assert_close(interp.pca_2d(x + 100.0), out, atol=1e-4, rtol=1e-4)  # a shift
    torch.testing.assert_close(interp.pca_2d(-x), -out)  # same directions, points mirrored
    with pytest.raises(ValueError, match="N, D >= 2"):
        interp.pca_2d(torch.randn(5))
    with pytest.raises(ValueError, match="N, D >= 2"):
        interp.pca_2d(torch.randn(1, 4))


def test_word_vectors_mean_or_first_piece(sp_tokenizer):
    table = torch.arange(sp_tokenizer.vocab_size * 2, dtype=torch.float32).view(-1, 2)
    ids = [i for i in sp_tokenizer.encode("Hugo") if sp_tokenizer.token_text(i).strip()]
    assert len(ids) > 1  # several pieces with this vocabulary
    mean = interp.word_vectors(table, sp_tokenizer, ["Hugo", "ball"])
    first = interp.word_vectors(table, sp_tokenizer, ["Hugo", "ball"], how="first")
    assert mean.shape == first.shape == (2, 2)
    torch.testing.assert_close(mean[0], table[ids].mean(0))
    torch.testing.assert_close(first[0], table[ids[0]])
    zoe = [i for i in sp_tokenizer.encode("Zoe") if sp_tokenizer.token_text(i).strip()]
    assert len(zoe) < len(sp_tokenizer.encode("Zoe"))  # its lone space piece is left out
    only_zoe = interp.word_vectors(table, sp_tokenizer, ["Zoe"])
    torch.testing.assert_close(only_zoe[0], table[zoe].mean(0))
    with pytest.raises(ValueError, match="how must be"):
        interp.word_vectors(table, sp_tokenizer, ["Hugo"], how="last")


# --- figures ----------------------------------------------------------------------------------


def test_head_scores_heatmap_shows_every_value():
    scores = torch.tensor([[0.1, 0.5, 0.0], [0.25, 0.05, 0.9]])
    ax = viz.head_scores_heatmap(scores, title="copy score", label="weight")
    assert ax.get_title() == "copy score"
    assert ax.get_xlabel() == "head" and ax.get_ylabel() == "layer"
    assert sorted(t.get_text() for t in ax.texts) == sorted(
        ["0.10", "0.50", "0.00", "0.25", "0.05", "0.90"])
    torch.testing.assert_close(torch.as_tensor(ax.images[0].get_array().data), scores)
    assert ax.figure.axes[-1].get_ylabel() == "weight"
    with pytest.raises(ValueError, match="layers, heads"):
        viz.head_scores_heatmap(torch.zeros(3))


def test_head_scores_heatmap_uses_a_fixed_0_to_1_scale_and_readable_labels():
    small = torch.tensor([[0.02, 0.08], [0.05, 0.01]])  # a map whose largest value is 0.08
    fig, (ax1, ax2) = plt.subplots(1, 2)
    viz.head_scores_heatmap(small, ax=ax1, colorbar=False)
    viz.head_scores_heatmap(torch.tensor([[0.9, 0.2]]), ax=ax2)
    assert ax1.images[0].get_clim() == ax2.images[0].get_clim() == (0.0, 1.0)
    assert len(fig.axes) == 3  # two maps, one shared colour bar
    assert {t.get_color() for t in ax1.texts} == {"white"}  # small values on a dark cell
    assert all(t.get_fontsize() >= 9 for t in ax1.texts + ax1.get_xticklabels())


def attentions_for(batch: int = 1, layers: int = 2, heads: int = 3, seq: int = 5) -> list:
    gen = torch.Generator().manual_seed(0)
    return [torch.softmax(torch.randn(batch, heads, seq, seq, generator=gen) + causal_mask(seq), -1)
            for _ in range(layers)]


def test_layer_head_grid_has_one_panel_per_head():
    fig = viz.layer_head_grid(attentions_for(), title="all heads")
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2 * 3
    assert [ax.get_title() for ax in panels][:2] == ["layer 0, head 0", "layer 0, head 1"]
    assert fig._suptitle.get_text() == "all heads"
    assert not plt.get_fignums()  # built without pyplot
    with pytest.raises(ValueError, match="at least one layer"):
        viz.layer_head_grid([])


def test_layer_head_grid_zooms_to_the_first_tokens_on_one_0_to_1_scale():
    attentions = attentions_for(seq=30)
    fig = viz.layer_head_grid(attentions, tokens=20)
    panels = [ax for ax in fig.axes if ax.images]
    assert all(ax.images[0].get_array().shape == (20, 20) for ax in panels)
    assert {ax.images[0].get_clim() for ax in panels} == {(0.0, 1.0)}
    torch.testing.assert_close(torch.as_tensor(panels[4].images[0].get_array().data),
                               attentions[1][0, 1, :20, :20])
    assert len(fig.axes) == len(panels) + 1  # one shared colour bar
    with pytest.raises(ValueError, match="tokens must be"):
        viz.layer_head_grid(attentions, tokens=0)


def test_head_picker_figure_draws_the_chosen_query():
    attentions = attentions_for(batch=2)
    labels = ["<s>", "▁Mia", "▁met", "▁Mia", "."]
    fig = viz.head_picker_figure(attentions, layer=1, head=2, query=3, labels=labels,
                                 highlight=[1], batch=1)
    map_ax, bar_ax = fig.axes[:2]
    assert map_ax.get_title() == "layer 1, head 2"
    torch.testing.assert_close(torch.as_tensor(map_ax.images[0].get_array().data),
                               attentions[1][1, 2])
    heights = [p.get_height() for p in bar_ax.patches]
    torch.testing.assert_close(torch.tensor(heights, dtype=torch.float32),
                               attentions[1][1, 2, 3, :4])
    colours = [p.get_facecolor() for p in bar_ax.patches]
    assert colours[1] != colours[0] and colours[0] == colours[2] == colours[3]
    assert "3: ▁Mia" in bar_ax.get_title()
    assert bar_ax.get_ylabel() == "attention weight" and bar_ax.get_xlabel() == viz.KEY_AXIS
    assert not plt.get_fignums()
    for bad, message in [({"layer": 2}, "layer must"), ({"head": 3}, "head must"),
                         ({"query": 5}, "query must"), ({"window": 1}, "window must")]:
        kwargs = {"layer": 0, "head": 0, "query": 0, **bad}
        with pytest.raises(ValueError, match=message):
            viz.head_picker_figure(attentions, **kwargs)


def test_head_picker_zooms_the_map_to_the_window_that_ends_at_the_query():
    attentions = attentions_for(seq=47)
    labels = [f"w{i}" for i in range(47)]
    fig = viz.head_picker_figure(attentions, layer=0, head=1, query=32, labels=labels,
                                 highlight=[4, 5])
    map_ax, bar_ax = fig.axes[:2]
    torch.testing.assert_close(torch.as_tensor(map_ax.images[0].get_array().data),
                               attentions[0][0, 1, 13:33, 13:33])  # 20 tokens, 13..32
    assert map_ax.images[0].get_clim() == (0.0, 1.0)
    assert [t.get_text() for t in map_ax.get_xticklabels()][-1] == "32: w32"
    assert len(bar_ax.patches) == 33  # every key the query can see
    labels_shown = map_ax.get_xticklabels() + map_ax.get_yticklabels() + bar_ax.get_xticklabels()
    assert min(t.get_fontsize() for t in labels_shown) >= 9
    early = viz.head_picker_figure(attentions, layer=0, head=1, query=3, labels=labels)
    assert early.axes[0].images[0].get_array().shape == (20, 20)  # the first 20 tokens
