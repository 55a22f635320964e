"""The complete Llama: equal to Hugging Face's LlamaForCausalLM, causal, cached, counted exactly."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil

import pytest
import torch
from model_helpers import randomised

from llama_edu import attention as attention_module
from llama_edu import interop
from llama_edu.model import Llama, ModelArgs, count_params

transformers = pytest.importorskip("transformers")

SEQ = 64
CONFIGS = {
    "mha_theta_1e4": ModelArgs(
        dim=64, n_layers=2, n_heads=4, vocab_size=97, multiple_of=32, max_seq_len=128
    ),
    "gqa_theta_5e5": ModelArgs(
        dim=64,
        n_layers=2,
        n_heads=8,
        n_kv_heads=2,
        vocab_size=97,
        multiple_of=16,
        ffn_dim_multiplier=1.3,
        rope_theta=500000.0,
        max_seq_len=128,
    ),
    "llama31_scaling": ModelArgs(
        dim=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        vocab_size=97,
        multiple_of=32,
        rope_theta=500000.0,
        max_seq_len=512,
        rope_scaling={
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ),
    "tied": ModelArgs(
        dim=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=1,
        vocab_size=97,
        multiple_of=32,
        tie_embeddings=True,
        max_seq_len=128,
    ),
}


def hf_model(args: ModelArgs, meta_state: dict, permute: bool = True):
    config = transformers.LlamaConfig(**interop.hf_config_kwargs(args))
    config._attn_implementation = "eager"
    hf = transformers.LlamaForCausalLM(config).eval()
    weights = interop.meta_to_hf(meta_state, args)
    if not permute:  # the classic conversion bug: copy q/k rows without permuting them
        for key in weights:
            if key.endswith(("q_proj.weight", "k_proj.weight")):
                meta_key = key.replace("model.", "").replace("self_attn.q_proj", "attention.wq")
                meta_key = meta_key.replace("self_attn.k_proj", "attention.wk")
                weights[key] = meta_state[meta_key]
    missing, unexpected = hf.load_state_dict(weights, strict=False)
    assert not unexpected and all("lm_head" in k for k in missing)
    if args.tie_embeddings:
        assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()
    return hf


def tokens_for(args: ModelArgs, batch: int = 2, seq: int = SEQ, seed: int = 1) -> torch.Tensor:
    return torch.randint(
        0, args.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(seed)
    )


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_equal_transformers(name):
    args = CONFIGS[name]
    model = randomised(args)
    hf = hf_model(args, model.state_dict())
    tokens = tokens_for(args)
    with torch.no_grad():
        ours, theirs = model(tokens), hf(tokens).logits
    assert ours.dtype == torch.float32 and ours.shape == (2, SEQ, args.vocab_size)
    assert ours.abs().max() > 1.0  # random weights of order one give non-trivial logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def _swap(a: torch.Tensor, b: torch.Tensor) -> None:
    with torch.no_grad():
        tmp = a.clone()
        a.copy_(b)
        b.copy_(tmp)


def _compare(model, hf, args) -> bool:
    tokens = tokens_for(args)
    with torch.no_grad():
        return torch.allclose(model(tokens), hf(tokens).logits, atol=1e-5, rtol=1e-5)


def test_mutation_no_qk_permutation_is_caught():
    args = CONFIGS["gqa_theta_5e5"]
    model = randomised(args)
    assert _compare(model, hf_model(args, model.state_dict()), args)
    assert not _compare(model, hf_model(args, model.state_dict(), permute=False), args)


def test_mutation_eps_is_caught():
    args = CONFIGS["mha_theta_1e4"]
    model = randomised(args)
    wrong = randomised(dataclasses.replace(args, norm_eps=1e-6))
    wrong.load_state_dict(model.state_dict())
    # make eps matter: shrink the embeddings so that mean(x^2) is comparable to eps
    with torch.no_grad():
        for m in (model, wrong):
            m.tok_embeddings.weight.mul_(1e-3)
    hf = hf_model(args, model.state_dict())
    assert _compare(model, hf, args)
    assert not _compare(wrong, hf, args)


def test_mutation_w1_w3_swap_is_caught():
    args = CONFIGS["mha_theta_1e4"]
    model = randomised(args)
    hf = hf_model(args, model.state_dict())
    for layer in model.layers:
        _swap(layer.feed_forward.w1.weight, layer.feed_forward.w3.weight)
    assert not _compare(model, hf, args)


def _explicit_attention(model: Llama) -> Llama:
    """The same model computing attention weights by hand (repeat_kv, softmax) instead of SDPA."""
    for layer in model.layers:
        layer.attention.use_sdpa = False
    return model


def test_explicit_attention_path_equals_hf():
    args = CONFIGS["gqa_theta_5e5"]
    model = randomised(args)
    hf = hf_model(args, model.state_dict())
    assert _compare(_explicit_attention(model), hf, args)


def test_mutation_repeat_instead_of_repeat_interleave_is_caught(monkeypatch):
    args = CONFIGS["gqa_theta_5e5"]
    model = _explicit_attention(randomised(args))
    hf = hf_model(args, model.state_dict())
    monkeypatch.setattr(attention_module, "repeat_kv", lambda x, n: x.repeat(1, 1, n, 1))
    assert not _compare(model, hf, args)


def test_mutation_wrong_theta_is_caught():
    args = CONFIGS["gqa_theta_5e5"]
    model = randomised(args)
    wrong = Llama(dataclasses.replace(args, rope_theta=10000.0)).eval()
    wrong.load_state_dict(model.state_dict())
    hf = hf_model(args, model.state_dict())
    assert _compare(model, hf, args) and not _compare(wrong, hf, args)


@pytest.mark.parametrize("name", ["gqa_theta_5e5", "tied"])
def test_meta_hf_meta_round_trip_is_bitwise(name):
    args = CONFIGS[name]
    state = randomised(args).state_dict()
    back = interop.hf_to_meta(interop.meta_to_hf(state, args), args)
    expected = {
        k: v for k, v in state.items() if not (args.tie_embeddings and k == "output.weight")
    }
    assert back.keys() == expected.keys()
    assert all(torch.equal(back[k], expected[k]) for k in expected)


@pytest.mark.parametrize("name", ["llama31_scaling", "tied"])
def test_export_then_from_pretrained_gives_the_same_logits(tmp_path, name):
    args = CONFIGS[name]
    model = randomised(args)
    folder = interop.export_hf(model, tmp_path / "export")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    hf = transformers.LlamaForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    tokens = tokens_for(args)
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, model(tokens), atol=1e-5, rtol=1e-5)
        back = interop.load_hf(folder)
        assert back.args == args
        torch.testing.assert_close(back(tokens), model(tokens), atol=0, rtol=0)
        from_pair = interop.load_hf((hf.state_dict(), hf.config))
        torch.testing.assert_close(from_pair(tokens), model(tokens), atol=1e-6, rtol=0)


def test_hf_config_without_our_args_reproduces_the_hidden_size():
    args = CONFIGS["gqa_theta_5e5"]
    config = transformers.LlamaConfig(**interop.hf_config_kwargs(args)).to_dict()
    derived = interop.args_from_hf_config(config)
    assert derived.hidden_dim == args.hidden_dim and derived.kv_heads == args.kv_heads
    assert derived.rope_theta == args.rope_theta


def test_meta_checkpoint_loads_with_weights_only(tmp_path):
    args = CONFIGS["gqa_theta_5e5"]
    model = randomised(args)
    torch.save(model.state_dict(), tmp_path / "consolidated.00.pth")
    params = {k: v for k, v in args.to_dict().items() if k not in ("max_seq_len", "tie_embeddings")}
    (tmp_path / "params.json").write_text(json.dumps(params))
    loaded = interop.load_meta(tmp_path)
    tokens = tokens_for(args, seq=16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens), model(tokens), atol=0, rtol=0)


def test_meta_checkpoint_with_pickled_objects_is_refused(tmp_path):
    args = CONFIGS["mha_theta_1e4"]
    state = dict(randomised(args).state_dict())
    state["extra"] = argparse.Namespace(note="arbitrary objects must not be unpickled")
    torch.save(state, tmp_path / "consolidated.00.pth")
    (tmp_path / "params.json").write_text(
        json.dumps({"dim": 64, "n_layers": 2, "n_heads": 4, "vocab_size": 97, "multiple_of": 32})
    )
    with pytest.raises(Exception, match="[Ww]eights only"):
        interop.load_meta(tmp_path)


def test_state_dict_errors_name_the_key():
    args = CONFIGS["mha_theta_1e4"]
    state = dict(randomised(args).state_dict())
    del state["layers.1.ffn_norm.weight"]
    state["layers.0.attention.wq.weight"] = torch.zeros(3, 64)
    state["surprise.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as info:
        interop.validate_state_dict(state, args)
    message = str(info.value)
    assert "missing key 'layers.1.ffn_norm.weight'" in message
    assert "'layers.0.attention.wq.weight' has shape (3, 64), expected (64, 64)" in message
    assert "unexpected key 'surprise.weight'" in message


# --- behaviour -----------------------------------------------------------------------------


def test_causality():
    args = CONFIGS["gqa_theta_5e5"]
    model = randomised(args)
    tokens = tokens_for(args, batch=1, seq=20)
    changed = tokens.clone()
    t = 11
    changed[0, t] = (changed[0, t] + 1) % args.vocab_size
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert torch.equal(a[:, :t], b[:, :t])
    assert not torch.allclose(a[:, t:], b[:, t:])
    assert all(not torch.allclose(a[0, i], b[0, i]) for i in range(t, 20))


def full_and_cached(model, args, splits, batch=2, seq=24):
    tokens = tokens_for(args, batch=batch, seq=seq, seed=3)
    cache = model.init_cache(batch, 64)
    pieces, start = [], 0
    with torch.no_grad():
        for size in splits:
            pieces.append(model(tokens[:, start : start + size], cache=cache))
            start += size
        return model(tokens), torch.cat(pieces, dim=1), cache


@pytest.mark.parametrize("splits", [[10] + [1] * 14, [7, 5, 1, 11], [1] * 24, [24]])
def test_kv_cache_equals_the_full_forward(splits):
    args = CONFIGS["gqa_theta_5e5"]
    full, cached, cache = full_and_cached(randomised(args), args, splits)
    assert cache.length == 24
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


def test_gqa_equals_mha_with_repeated_kv_weights():
    gqa_args = CONFIGS["gqa_theta_5e5"]
    gqa = randomised(gqa_args)
    mha_args = dataclasses.replace(gqa_args, n_kv_heads=None)
    mha = Llama(mha_args).eval()
    state = dict(gqa.state_dict())
    rep, head_dim = gqa_args.n_heads // gqa_args.kv_heads, gqa_args.head_dim
    for i in range(gqa_args.n_layers):
        for w in ("wk", "wv"):
            key = f"layers.{i}.attention.{w}.weight"
            heads = state[key].view(gqa_args.kv_heads, head_dim, gqa_args.dim)
            state[key] = heads.repeat_interleave(rep, dim=0).reshape(-1, gqa_args.dim)
    mha.load_state_dict(state)
    tokens = tokens_for(gqa_args)
    with torch.no_grad():
        torch.testing.assert_close(mha(tokens), gqa(tokens), atol=1e-5, rtol=1e-5)


def test_bad_inputs_get_clear_errors():
    args = CONFIGS["mha_theta_1e4"]
    model = randomised(args)
    with pytest.raises(ValueError, match=r"token id 97 at \(batch 0, position 3\)"):
        model(torch.tensor([[1, 2, 3, 97]]))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, args.max_seq_len + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="tokens\\[None\\]"):
        model(torch.tensor([1, 2, 3]))
    cache = model.init_cache(1, 8)
    model(torch.zeros(1, 6, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="positions 6..8 do not fit: the cache holds 8"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="a batch of 2 sequences does not fit a cache made for 1"):
        model(torch.zeros(2, 1, dtype=torch.long), cache=model.init_cache(1, 8))
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len"):
        model.init_cache(1, args.max_seq_len + 1)


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"dim": 60, "n_heads": 8}, "not divisible by n_heads"),
        ({"n_heads": 4, "n_kv_heads": 3}, "not divisible by n_kv_heads"),
        ({"dim": 36, "n_heads": 4}, "is odd"),
    ],
)
def test_invalid_model_args(fields, complaint):
    base = {"dim": 64, "n_layers": 1, "n_heads": 4, "vocab_size": 10}
    with pytest.raises(ValueError, match=complaint):
        ModelArgs(**{**base, **fields})


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("llama2-7b", 6_738_415_616),
        ("llama2-13b", 13_015_864_320),
        ("llama2-70b", 68_976_648_192),
        ("llama3-8b", 8_030_261_248),
        ("llama3.2-1b", 1_235_814_400),
    ],
)
def test_exact_parameter_counts(name, expected):
    assert count_params(name) == expected
    parts = count_params(name, breakdown=True)
    assert parts["total"] == expected


def test_parameter_breakdown_by_formula():
    args = ModelArgs.from_name("llama2-7b")
    parts = count_params(args, breakdown=True)
    assert parts["attention"] == args.n_layers * 4 * args.dim * args.dim
    assert parts["feed_forward"] == args.n_layers * 3 * args.dim * args.hidden_dim
    assert parts["embeddings"] == parts["output"] == args.vocab_size * args.dim
    assert parts["norms"] == (2 * args.n_layers + 1) * args.dim


def test_state_dict_uses_meta_names():
    keys = set(Llama(CONFIGS["mha_theta_1e4"]).state_dict())
    for key in [
        "tok_embeddings.weight",
        "layers.0.attention.wq.weight",
        "layers.1.attention.wo.weight",
        "layers.0.feed_forward.w1.weight",
        "layers.0.feed_forward.w2.weight",
        "layers.0.feed_forward.w3.weight",
        "layers.0.attention_norm.weight",
        "layers.0.ffn_norm.weight",
        "norm.weight",
        "output.weight",
    ]:
        assert key in keys
    assert not any("bias" in k for k in keys)


def test_export_with_tokenizer_loads_in_transformers(tmp_path):
    from llama_edu.data import tiny_tales_text
    from llama_edu.tokenizer import train_sentencepiece

    tokenizer = train_sentencepiece(tiny_tales_text(300, 0), 320, tmp_path / "tok")
    args = ModelArgs.from_name("tiny", vocab_size=320)
    folder = interop.export_hf(Llama(args), tmp_path / "hf", tokenizer=tokenizer)
    assert (folder / "tokenizer.model").is_file()
    transformers.logging.set_verbosity_error()
    theirs = transformers.AutoTokenizer.from_pretrained(folder)
    for text in ["Once upon a time, Mia found a red kite.", "Leo  saw 42 cats.\nThe end."]:
        ids = tokenizer.encode(text, bos=True)
        assert theirs(text)["input_ids"] == ids
        assert theirs.decode(ids, skip_special_tokens=True) == text


def test_the_model_compiles_to_one_graph():
    # a value-dependent branch (an input check, a mask test) would split the compiled model
    # into pieces and recompile per layer; torch.compile then stops paying for itself
    torch.manual_seed(0)
    model = Llama(ModelArgs.from_name("tiny", n_layers=2))
    tokens = torch.randint(0, model.args.vocab_size, (2, 16))
    explained = torch._dynamo.explain(model)(tokens)
    assert explained.graph_break_count == 0, [str(b.reason)[:200] for b in explained.break_reasons]
    assert explained.graph_count == 1
    if shutil.which("c++") or shutil.which("g++"):  # inductor writes C++ on the CPU
        compiled = torch.compile(model)
        torch.testing.assert_close(compiled(tokens), model(tokens), atol=1e-5, rtol=1e-4)
