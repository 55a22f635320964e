"""The ablation switches of ModelArgs: each variant computes what its name says, and the
default stays Llama (the transformers equivalence lives in test_model.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llama_edu import interop
from llama_edu.attention import causal_mask
from llama_edu.ffn import FeedForward, MLPFeedForward
from llama_edu.model import SWITCHES, Llama, ModelArgs, TransformerBlock
from llama_edu.norm import LayerNorm, RMSNorm

SMALL = ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, multiple_of=8,
                  max_seq_len=32)  # fmt: skip


def small(**switches: str | int) -> ModelArgs:
    return dataclasses.replace(SMALL, **switches)


def block_inputs(args: ModelArgs, seq: int = 7) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    model = Llama(args)
    x = torch.randn(2, seq, args.dim)
    cos, sin = model.rope_cos[:seq], model.rope_sin[:seq]
    return x, cos, sin, causal_mask(seq, 0, x.device)


def randomise(module: nn.Module) -> None:
    """Give norm gains and biases values far from 1 and 0, so that a missing norm shows."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 2.0)


def test_defaults_are_llama() -> None:
    args = ModelArgs.from_name("tiny")
    assert args.is_llama and args.changed_switches() == {}
    assert {k: v[0] for k, v in SWITCHES.items()} == {
        "norm_position": "pre", "norm_type": "rmsnorm", "ffn_type": "swiglu", "pos_encoding": "rope"
    }  # fmt: skip
    model = Llama(args)
    assert isinstance(model.norm, RMSNorm) and isinstance(model.layers[0].ffn_norm, RMSNorm)
    assert isinstance(model.layers[0].feed_forward, FeedForward)
    assert not any(k.startswith("pos_") for k in model.state_dict())


def test_pre_norm_block_is_x_plus_f_of_norm_x() -> None:
    args = small()
    x, cos, sin, mask = block_inputs(args)
    block = TransformerBlock(0, args)
    randomise(block)
    with torch.no_grad():
        h = x + block.attention(block.attention_norm(x), cos, sin, mask)
        expected = h + block.feed_forward(block.ffn_norm(h))
        out, _ = block(x, cos, sin, mask)
    torch.testing.assert_close(out, expected)


def test_post_norm_block_is_norm_of_x_plus_f_of_x() -> None:
    args = small(norm_position="post")
    x, cos, sin, mask = block_inputs(args)
    block = TransformerBlock(0, args)
    randomise(block)
    with torch.no_grad():
        h = block.attention_norm(x + block.attention(x, cos, sin, mask))
        expected = block.ffn_norm(h + block.feed_forward(h))
        out, _ = block(x, cos, sin, mask)
    torch.testing.assert_close(out, expected)
    # the output is normalised: its RMS over features is the gain's (weights all 1 here)
    fresh = TransformerBlock(0, args)
    with torch.no_grad():
        out, _ = fresh(x, cos, sin, mask)
    torch.testing.assert_close(out.pow(2).mean(-1), torch.ones(2, 7), atol=1e-4, rtol=0)
    assert isinstance(Llama(args).norm, nn.Identity)  # the last block already ends in a norm


def test_no_norm_block_has_no_norm_and_no_norm_parameters() -> None:
    args = small(norm_position="none")
    x, cos, sin, mask = block_inputs(args)
    block = TransformerBlock(0, args)
    with torch.no_grad():
        h = x + block.attention(x, cos, sin, mask)
        expected = h + block.feed_forward(h)
        out, _ = block(x, cos, sin, mask)
    torch.testing.assert_close(out, expected)
    model = Llama(args)
    assert not any("norm" in name for name, _ in model.named_parameters())
    assert model.num_params(breakdown=True)["norms"] == 0


def test_layernorm_variant_centres_and_scales() -> None:
    model = Llama(small(norm_type="layernorm"))
    assert isinstance(model.norm, LayerNorm)
    assert isinstance(model.layers[1].attention_norm, LayerNorm)
    x = torch.randn(3, 5, SMALL.dim) * 4 + 2
    with torch.no_grad():
        y = model.layers[0].attention_norm(x)
    torch.testing.assert_close(y.mean(-1), torch.zeros(3, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(3, 5), atol=1e-3, rtol=0)
    # one bias per norm on top of RMSNorm's gains: 2 per layer + the final one
    extra = model.num_params() - Llama(small()).num_params()
    assert extra == (2 * SMALL.n_layers + 1) * SMALL.dim


@pytest.mark.parametrize("kind,act", [("relu", F.relu), ("gelu", F.gelu)])
def test_two_matrix_ffn_is_w2_act_w1_with_equal_parameters(kind: str, act) -> None:
    args = small(ffn_type=kind)
    ffn = Llama(args).layers[0].feed_forward
    assert isinstance(ffn, MLPFeedForward)
    x = torch.randn(2, 5, SMALL.dim)
    with torch.no_grad():
        torch.testing.assert_close(ffn(x), act(x @ ffn.w1.weight.T) @ ffn.w2.weight.T)
    assert args.hidden_dim == small().hidden_dim * 3 // 2
    for preset in ("tiny", "llama2-7b"):
        llama = ModelArgs.from_name(preset)
        variant = ModelArgs.from_name(preset, ffn_type=kind)
        swiglu_params = 3 * llama.dim * llama.hidden_dim
        assert 2 * variant.dim * variant.hidden_dim == swiglu_params


def test_relu_and_gelu_differ() -> None:
    torch.manual_seed(0)
    relu = MLPFeedForward(8, 12, "relu")
    gelu = MLPFeedForward(8, 12, "gelu")
    gelu.load_state_dict(relu.state_dict())
    x = torch.randn(4, 8)
    assert not torch.allclose(relu(x), gelu(x))
    with pytest.raises(ValueError, match="relu' or 'gelu"):
        MLPFeedForward(8, 12, "swish")


def logits_after_swap(args: ModelArgs) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-position logits of a sequence and of the same with two earlier tokens swapped."""
    torch.manual_seed(0)
    model = Llama(args).eval()
    tokens = torch.tensor([[5, 9, 13, 21, 2, 7]])
    swapped = tokens[:, [0, 3, 2, 1, 4, 5]]
    with torch.no_grad():
        return model(tokens)[0, -1], model(swapped)[0, -1]


def test_no_positions_cannot_tell_order_and_the_others_can() -> None:
    # one layer: the last position attends to a bag of earlier tokens (with more layers the
    # causal mask itself leaks order, since each earlier position sees a different prefix)
    one_layer = {"n_layers": 1}
    same, swapped = logits_after_swap(small(pos_encoding="none", **one_layer))
    torch.testing.assert_close(same, swapped)
    for kind in ("rope", "learned", "sinusoidal"):
        same, swapped = logits_after_swap(small(pos_encoding=kind, **one_layer))
        assert (same - swapped).abs().max() > 1e-4, kind
    same, swapped = logits_after_swap(small(pos_encoding="none"))  # two layers
    assert (same - swapped).abs().max() > 1e-4


@pytest.mark.parametrize("kind", ["learned", "sinusoidal"])
def test_absolute_positions_are_added_to_the_input(kind: str) -> None:
    torch.manual_seed(0)
    model = Llama(small(pos_encoding=kind)).eval()
    tokens = torch.tensor([[3, 3, 3, 3]])
    with torch.no_grad():
        h0 = model.trace(tokens).hidden_states[0]
    table = model.pos_embeddings.weight if kind == "learned" else model.pos_table
    torch.testing.assert_close(h0[0], model.tok_embeddings.weight[3] + table[:4])
    assert torch.equal(model.rope_sin, torch.zeros_like(model.rope_sin))  # no rotation on top
    if kind == "sinusoidal":
        assert "pos_table" not in model.state_dict()  # fixed, not learned
        assert not any(n.startswith("pos") for n, _ in model.named_parameters())
    else:
        assert model.num_params() == Llama(small()).num_params() + SMALL.max_seq_len * SMALL.dim


@pytest.mark.parametrize(
    "switches",
    [{}, {"norm_position": "post"}, {"norm_type": "layernorm"}, {"ffn_type": "gelu"},
     {"pos_encoding": "learned"}, {"pos_encoding": "sinusoidal"}, {"pos_encoding": "none"}],
)  # fmt: skip
def test_every_variant_decodes_with_a_cache_like_without(switches: dict[str, str]) -> None:
    torch.manual_seed(0)
    model = Llama(small(**switches)).eval()
    tokens = torch.randint(0, SMALL.vocab_size, (2, 12))
    with torch.no_grad():
        full = model(tokens)
        cache = model.init_cache(2, 16)
        parts = [model(tokens[:, :5], cache)] + [model(tokens[:, i : i + 1], cache)
                                                  for i in range(5, 12)]  # fmt: skip
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-4)


def test_bad_switch_values_are_explained() -> None:
    with pytest.raises(ValueError, match=r"norm_position must be one of 'pre', 'post', 'none'"):
        ModelArgs.from_name("tiny", norm_position="sandwich")
    with pytest.raises(ValueError, match="pos_encoding must be one of"):
        ModelArgs.from_name("tiny", pos_encoding="alibi")


def test_variants_are_refused_by_the_transformers_formats() -> None:
    args = small(norm_position="post", ffn_type="relu")
    assert not args.is_llama
    assert args.changed_switches() == {"norm_position": "post", "ffn_type": "relu"}
    with pytest.raises(ValueError, match="ablation variant .*norm_position='post'"):
        interop.hf_config_kwargs(args)
    with pytest.raises(ValueError, match="ablation variant"):
        interop.meta_to_hf(Llama(args).state_dict(), args)
