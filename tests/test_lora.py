"""LoRA from scratch: equal to peft on the same weights, frozen where it should be, saved safely."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from model_helpers import randomised
from safetensors.torch import save_file
from torch import nn

from llama_edu import interop
from llama_edu.lora import (
    LoRALinear,
    add_lora,
    count_trainable,
    load_adapter,
    lora_layers,
    lora_parameters,
    lora_state_dict,
    merge_lora,
    read_adapter_metadata,
    save_adapter,
    unmerge_lora,
)
from llama_edu.model import Llama, ModelArgs
from llama_edu.rope import interleaved_to_half

# dim 64, 4 query heads and 2 key/value heads of width 16: wq is (64, 64), wv is (32, 64)
ARGS = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=97, multiple_of=32,
                 max_seq_len=64)  # fmt: skip


def base_model(seed: int = 0) -> Llama:
    """A small Llama whose weights are random and of order one (so every layer matters)."""
    return randomised(ARGS, seed)


def tokens(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, ARGS.vocab_size, (2, 12), generator=torch.Generator().manual_seed(seed))


def randomise_adapters(model: nn.Module, seed: int = 2) -> None:
    """Give every A and B random non-zero values, as after some training."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


# ------------------------------------------------------------------------------- the layer


def test_the_layer_computes_base_plus_scaled_low_rank_update_by_hand() -> None:
    base = nn.Linear(5, 3, bias=True)
    layer = LoRALinear(base, r=2, alpha=3.0)
    with torch.no_grad():
        layer.lora_A.weight.copy_(torch.arange(10.0).reshape(2, 5) / 10)  # (r, in)
        layer.lora_B.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0], [0.0, 1.0]]))  # (out, r)
    x = torch.tensor([[1.0, 0.0, -1.0, 2.0, 0.5]])
    # A x = [0 - 0.2 + 0.6 + 0.2, 0.5 - 0.7 + 1.6 + 0.45] = [0.6, 1.85];
    # B (A x) = [0.6 - 1.85, 0.3 + 3.7, 1.85] = [-1.25, 4.0, 1.85]; scaled by alpha / r = 1.5
    update = torch.tensor([[-1.25, 4.0, 1.85]]) * 1.5
    torch.testing.assert_close(layer(x), base(x) + update)
    assert layer.scaling == 1.5 and layer.weight is base.weight and layer.bias is base.bias
    assert not base.weight.requires_grad and not base.bias.requires_grad
    assert layer.lora_A.weight.requires_grad and layer.lora_B.weight.requires_grad


def test_initialisation_is_kaiming_uniform_for_a_and_zero_for_b() -> None:
    layer = LoRALinear(nn.Linear(400, 300), r=64, alpha=16)
    a = layer.lora_A.weight
    bound = 1 / math.sqrt(400)  # Kaiming-uniform with a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in))
    assert a.abs().max() <= bound and a.abs().max() > 0.95 * bound
    assert abs(a.std().item() - bound / math.sqrt(3)) < 0.02 * bound
    assert torch.count_nonzero(layer.lora_B.weight) == 0


def test_a_fresh_adapter_changes_nothing() -> None:
    model = base_model()
    before = model(tokens())
    add_lora(model, r=4, alpha=8, targets=["wq", "wv"])
    assert torch.equal(model(tokens()), before)


# ------------------------------------------------------------------------------- equal to peft


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_logits_and_trainable_counts_equal_peft_on_the_same_weights() -> None:
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    r, alpha = 4, 12.0
    ours = base_model()
    config = transformers.LlamaConfig(**interop.hf_config_kwargs(ARGS))
    config._attn_implementation = "eager"
    hf = transformers.LlamaForCausalLM(config).eval()
    missing, unexpected = hf.load_state_dict(interop.meta_to_hf(ours.state_dict(), ARGS),
                                             strict=False)  # fmt: skip
    assert not unexpected and not missing
    add_lora(ours, r, alpha, ["wq", "wv"])
    randomise_adapters(ours)
    theirs = peft.get_peft_model(hf, peft.LoraConfig(
        r=r, lora_alpha=alpha, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)).eval()
    params = dict(theirs.named_parameters())
    with torch.no_grad():
        for i in range(ARGS.n_layers):
            for meta, hf_name in (("wq", "q_proj"), ("wv", "v_proj")):
                layer = ours.layers[i].attention.get_submodule(meta)
                key = f"base_model.model.model.layers.{i}.self_attn.{hf_name}"
                key += ".lora_{}.default.weight"
                b = layer.lora_B.weight
                if meta == "wq":  # HF keeps q's rows per head in rotate-half order: B's rows too
                    b = interleaved_to_half(b, ARGS.n_heads)
                params[key.format("A")].copy_(layer.lora_A.weight)
                params[key.format("B")].copy_(b)
    with torch.no_grad():
        got, want = ours(tokens()), theirs(input_ids=tokens()).logits
    assert got.abs().max() > 1  # not a trivially small output
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    trainable, _ = theirs.get_nb_trainable_parameters()
    assert count_trainable(ours) == trainable
    assert sum(p.numel() for p in theirs.parameters() if p.requires_grad) == trainable


# ------------------------------------------------------------------------------- trainability


def test_trainable_parameter_count_by_hand() -> None:
    model = add_lora(base_model(), r=4, alpha=8, targets=["wq", "wv"])
    # per layer: wq 4 * (64 + 64) = 512, wv 4 * (64 + 32) = 384; two layers: 2 * 896
    assert count_trainable(model) == 1792
    assert sum(p.numel() for p in lora_parameters(model)) == 1792
    assert sorted(lora_layers(model)) == ["layers.0.attention.wq", "layers.0.attention.wv",
                                          "layers.1.attention.wq", "layers.1.attention.wv"]


def test_full_names_and_suffixes_choose_layers() -> None:
    model = add_lora(base_model(), r=2, alpha=2, targets=["layers.1.attention.wq", "w2"])
    assert sorted(lora_layers(model)) == ["layers.0.feed_forward.w2", "layers.1.attention.wq",
                                          "layers.1.feed_forward.w2"]  # fmt: skip
    # SwiGLU's hidden width: 2/3 * 4 * 64 = 170.7 -> 170, rounded up to a multiple of 32: 192
    assert ARGS.hidden_dim == 192
    # wq (64 x 64) once, w2 (64 x 192) twice: 2 * (64 + 64) + 2 * 2 * (192 + 64) = 256 + 1024
    assert count_trainable(model) == 1280


def test_gradient_flows_only_to_a_and_b() -> None:
    model = add_lora(base_model(), r=4, alpha=8, targets=["wq", "wv"])
    randomise_adapters(model)
    model.train()
    logits = model(tokens())
    nn.functional.cross_entropy(logits.flatten(0, 1), tokens(3).flatten()).backward()
    adapters = {id(p) for p in lora_parameters(model)}
    for name, p in model.named_parameters():
        if id(p) in adapters:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name


def test_merge_and_unmerge_keep_the_output_and_round_trip_the_weights() -> None:
    model = add_lora(base_model(), r=4, alpha=8, targets=["wq", "wv", "w1"])
    randomise_adapters(model)
    weights = {n: m.base.weight.clone() for n, m in lora_layers(model).items()}
    before = model(tokens())
    merge_lora(model)
    layer = model.layers[0].attention.wq
    assert layer.merged
    assert not torch.allclose(layer.base.weight, weights["layers.0.attention.wq"], atol=1e-3)
    delta = 2.0 * layer.lora_B.weight @ layer.lora_A.weight  # alpha / r = 8 / 4
    torch.testing.assert_close(layer.base.weight, weights["layers.0.attention.wq"] + delta)
    torch.testing.assert_close(model(tokens()), before, atol=1e-5, rtol=1e-5)
    unmerge_lora(model)
    for name, m in lora_layers(model).items():
        assert not m.merged
        torch.testing.assert_close(m.base.weight, weights[name], atol=1e-6, rtol=0)
    torch.testing.assert_close(model(tokens()), before, atol=1e-5, rtol=1e-5)


def test_merge_with_replace_gives_a_plain_llama_again() -> None:
    plain = base_model()
    names = set(plain.state_dict())
    model = add_lora(copy.deepcopy(plain), r=4, alpha=8, targets=["wq", "wv"])
    randomise_adapters(model)
    before = model(tokens())
    merge_lora(model, replace=True)
    assert not lora_layers(model)
    assert type(model.layers[1].attention.wv) is nn.Linear
    assert set(model.state_dict()) == names
    torch.testing.assert_close(model(tokens()), before, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(model(tokens()), plain(tokens()), atol=1e-3)


def test_a_merged_layer_refuses_to_train_and_to_merge_twice() -> None:
    model = add_lora(base_model(), r=2, alpha=4, targets=["wq"])
    merge_lora(model)
    model.train()
    with pytest.raises(RuntimeError, match="unmerge_lora"):
        model(tokens())
    with pytest.raises(RuntimeError, match="merged already"):
        model.layers[0].attention.wq.merge()


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("r", "alpha", "targets", "error", "words"), [
    (0, 8, ["wq"], ValueError, "rank r must be >= 1"),
    (-2, 8, ["wq"], ValueError, "rank r must be >= 1"),
    (2.0, 8, ["wq"], TypeError, "must be an int"),
    (True, 8, ["wq"], TypeError, "must be an int"),
    (4, 0, ["wq"], ValueError, "alpha must be a finite number > 0"),
    (4, -1.0, ["wq"], ValueError, "alpha must be a finite number > 0"),
    (4, math.inf, ["wq"], ValueError, "alpha must be a finite number > 0"),
    (4, "16", ["wq"], TypeError, "alpha must be a number"),
    (4, 8, "wq", TypeError, "list of layer names"),
    (4, 8, [], ValueError, "non-empty list"),
    (4, 8, ["q_proj"], ValueError, "'q_proj' matches no linear layer"),
    (4, 8, ["attention"], ValueError, "layers.*.attention.wq, layers.*.attention.wk"),
    (4, 8, ["layers.7.attention.wq"], ValueError, "output"),
])  # fmt: skip
def test_bad_input_is_refused_with_a_clear_message(r, alpha, targets, error, words) -> None:
    model = base_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=words.replace("*", r"\*").replace("(", r"\(")):
        add_lora(model, r, alpha, targets)
    assert not lora_layers(model)  # nothing was changed
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert all(p.requires_grad for p in model.parameters())


def test_a_layer_that_has_lora_already_is_refused() -> None:
    model = add_lora(base_model(), r=2, alpha=4, targets=["wq"])
    with pytest.raises(ValueError, match="already have LoRA"):
        add_lora(model, r=2, alpha=4, targets=["wv", "wq"])
    with pytest.raises(ValueError, match=r"matches no linear layer.*with LoRA already"):
        add_lora(model, r=2, alpha=4, targets=["lora_A"])


def test_a_tied_output_layer_is_refused() -> None:
    import dataclasses

    model = Llama(dataclasses.replace(ARGS, tie_embeddings=True))
    with pytest.raises(ValueError, match="shares its weight with tok_embeddings.weight"):
        add_lora(model, r=2, alpha=4, targets=["output"])


# ------------------------------------------------------------------------------- save and load


def trained(seed: int = 2) -> Llama:
    model = add_lora(base_model(), r=4, alpha=8, targets=["wq", "wv"])
    randomise_adapters(model, seed)
    return model


def test_save_load_merge_gives_the_trained_models_logits(tmp_path) -> None:
    model = trained()
    want = model(tokens())
    path = save_adapter(model, tmp_path / "run" / "adapter.safetensors", base_run="runs/base",
                        r=4, alpha=8, targets=["wq", "wv"])  # fmt: skip
    assert sorted(p.name for p in path.parent.iterdir()) == ["adapter.safetensors"]  # no temp
    meta = read_adapter_metadata(path)
    assert (meta["r"], meta["alpha"], meta["targets"], meta["base_run"]) == (4, 8.0, ["wq", "wv"],
                                                                             "runs/base")
    assert meta["layers"]["layers.0.attention.wv"] == [32, 64]
    fresh = load_adapter(base_model(), path)
    assert count_trainable(fresh) == 1792
    for key, value in lora_state_dict(model).items():
        assert torch.equal(lora_state_dict(fresh)[key], value)
    merge_lora(fresh, replace=True)
    torch.testing.assert_close(fresh(tokens()), want, atol=1e-5, rtol=1e-5)


def test_saving_refuses_to_overwrite_a_file_it_did_not_write(tmp_path) -> None:
    model = trained()
    notes = tmp_path / "notes.safetensors"
    notes.write_text("my notes")
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other))
    for path in (notes, other):
        data = path.read_bytes()
        with pytest.raises(FileExistsError, match="not a LoRA adapter written by llama_edu"):
            save_adapter(model, path)
        assert path.read_bytes() == data
    with pytest.raises(FileExistsError, match="folder"):
        save_adapter(model, tmp_path)
    save_adapter(model, notes, overwrite=True)
    assert read_adapter_metadata(notes)["r"] == 4
    save_adapter(trained(seed=5), notes)  # our own adapter is replaced without asking
    loaded = load_adapter(base_model(), notes)
    assert torch.equal(lora_state_dict(loaded)["layers.1.attention.wq.lora_B.weight"],
                       lora_state_dict(trained(seed=5))["layers.1.attention.wq.lora_B.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.safetensors", "other.safetensors"]


def test_saving_checks_what_it_is_told(tmp_path) -> None:
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_adapter(base_model(), tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match="r=8 was given but the model's LoRA layers have r=4"):
        save_adapter(trained(), tmp_path / "a.safetensors", r=8)
    with pytest.raises(ValueError, match="alpha=16 was given"):
        save_adapter(trained(), tmp_path / "a.safetensors", alpha=16)
    with pytest.raises(ValueError, match=r"\['w1'\] match none"):
        save_adapter(trained(), tmp_path / "a.safetensors", targets=["wq", "w1"])
    assert not list(tmp_path.iterdir())


def test_loading_checks_the_file_and_the_base_model(tmp_path) -> None:
    import dataclasses

    path = save_adapter(trained(), tmp_path / "adapter.safetensors")
    wider = Llama(dataclasses.replace(ARGS, n_kv_heads=4))  # wv becomes (64, 64)
    with pytest.raises(ValueError, match=r"another model shape \(n_kv_heads: adapter 2, model 4"):
        load_adapter(wider, path)
    with pytest.raises(ValueError, match="different base model"):
        load_adapter(base_model(seed=7), path)
    other_base = load_adapter(base_model(seed=7), path, check_base=False)
    assert len(lora_layers(other_base)) == 4
    with pytest.raises(ValueError, match="already has LoRA layers"):
        load_adapter(add_lora(base_model(), r=2, alpha=8, targets=["wq", "wv"]), path)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not a LoRA adapter"):
        load_adapter(base_model(), foreign)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_adapter(base_model(), broken)
    with pytest.raises(FileNotFoundError):
        load_adapter(base_model(), tmp_path / "missing.safetensors")


def test_loading_into_existing_matching_layers_refuses_merged_ones(tmp_path) -> None:
    path = save_adapter(trained(), tmp_path / "adapter.safetensors")
    target = add_lora(base_model(), r=4, alpha=8, targets=["wq", "wv"])
    load_adapter(target, path)
    torch.testing.assert_close(target(tokens()), trained()(tokens()))
    merge_lora(target)
    with pytest.raises(RuntimeError, match="unmerge_lora"):
        load_adapter(target, path)


def test_metadata_is_json(tmp_path) -> None:
    from safetensors import safe_open

    path = save_adapter(trained(), tmp_path / "adapter.safetensors", targets=["wq", "wv"])
    with safe_open(str(path), framework="pt") as handle:
        raw = handle.metadata()
        keys = sorted(handle.keys())
    assert json.loads(raw["r"]) == 4 and json.loads(raw["alpha"]) == 8.0
    assert json.loads(raw["targets"]) == ["wq", "wv"]
    assert keys == sorted(f"layers.{i}.attention.{w}.lora_{ab}.weight" for i in range(2)
                          for w in ("wq", "wv") for ab in "AB")  # fmt: skip


def test_training_changes_only_the_adapter_and_survives_save_load_merge(tmp_path) -> None:
    model = add_lora(base_model(), r=2, alpha=4, targets=["wq", "wv", "w2"])
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    optimizer = torch.optim.AdamW(lora_parameters(model), lr=1e-2)
    model.train()
    losses = []
    for _ in range(5):
        logits = model(tokens())
        loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens()[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    assert losses[-1] < losses[0]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())
    want = model(tokens())
    path = save_adapter(model, tmp_path / "adapter.safetensors", r=2, alpha=4,
                        targets=["wq", "wv", "w2"])  # fmt: skip
    fresh = merge_lora(load_adapter(base_model(), path), replace=True)
    torch.testing.assert_close(fresh(tokens()), want, atol=1e-5, rtol=1e-5)


def test_a_failed_save_leaves_the_old_adapter_whole_and_no_temporary_file(tmp_path, monkeypatch):
    import safetensors.torch

    path = save_adapter(trained(), tmp_path / "adapter.safetensors")
    data = path.read_bytes()

    def crash_half_way(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_adapter(trained(seed=9), path)
    assert path.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["adapter.safetensors"]
