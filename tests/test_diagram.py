"""The static architecture diagrams (llama_edu.diagram)."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from llama_edu.diagram import llama_block_figure, norm_placement_figure  # noqa: E402
from llama_edu.model import ModelArgs  # noqa: E402

# every test here fails on a warning while plotting and closes its figures (conftest.py)
pytestmark = pytest.mark.usefixtures("strict_plotting")


def texts(fig: Figure) -> str:
    """All the text drawn in a figure, one string per line."""
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_block_figure_names_every_part_in_order():
    fig = llama_block_figure()
    assert isinstance(fig, Figure)
    drawn = texts(fig)
    parts = [
        "token ids",
        "tok_embeddings",
        "attention_norm: RMSNorm",
        "attention: causal, grouped-query heads",
        "ffn_norm: RMSNorm",
        "feed_forward: SwiGLU",
        "norm: final RMSNorm",
        "output: linear layer",
    ]
    positions = [drawn.find(part) for part in parts]
    assert -1 not in positions, [p for p, i in zip(parts, positions, strict=True) if i < 0]
    assert positions == sorted(positions), "the parts are not drawn from input to output"
    assert drawn.count("+") >= 2  # the two residual additions
    assert drawn.count("residual") == 2
    assert "RoPE rotates q and k" in drawn


def test_block_figure_shows_symbolic_shapes():
    drawn = texts(llama_block_figure())
    for shape in [
        "(batch, seq)",
        "(batch, seq, dim)",
        "(batch, seq, n_heads, head_dim)",
        "(batch, seq, n_kv_heads, head_dim)",
        "(batch, seq, hidden_dim)",
        "(batch, seq, vocab_size)",
        "repeated n_layers times",
    ]:
        assert shape in drawn, shape


def test_block_figure_with_args_shows_the_numbers():
    args = ModelArgs.from_name("llama3-8b")
    drawn = texts(llama_block_figure(args))
    for shape in [
        "(batch, seq, dim=4096)",
        "(batch, seq, n_heads=32, head_dim=128)",
        "(batch, seq, n_kv_heads=8, head_dim=128)",
        f"(batch, seq, hidden_dim={args.hidden_dim})",
        "(batch, seq, vocab_size=128256)",
        "repeated n_layers=32 times",
    ]:
        assert shape in drawn, shape
    # without n_kv_heads, one key/value head per query head
    tiny = ModelArgs.from_name("tiny", n_kv_heads=None)
    assert "n_kv_heads=4" in texts(llama_block_figure(tiny))


@pytest.mark.parametrize("bad", ["tiny", {"dim": 64}, 7])
def test_block_figure_rejects_anything_but_model_args(bad):
    with pytest.raises(TypeError, match=r"ModelArgs.*from_name"):
        llama_block_figure(bad)


def test_norm_placement_figure_shows_both_orders():
    drawn = texts(norm_placement_figure())
    assert "post-norm (original Transformer)" in drawn
    assert "pre-norm (Llama)" in drawn
    assert "next x = Norm(x + F(x))" in drawn
    assert "next x = x + F(Norm(x))" in drawn
    assert drawn.count("residual") == 2
    # pre-norm: the norm comes before the sub-layer; post-norm: after the addition
    post, pre = drawn.split("pre-norm (Llama)")
    assert post.find("sub-layer F") < post.find("+\n") < post.find("LayerNorm or RMSNorm")
    assert pre.find("LayerNorm or RMSNorm") < pre.find("sub-layer F") < pre.find("\n+\n")
