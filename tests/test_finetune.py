"""`llama-edu finetune`: each method end to end on a tiny base run, resume, refusals, bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from llama_edu import cli, preference
from llama_edu.lora import read_adapter_metadata
from llama_edu.model import Llama, ModelArgs
from llama_edu.runfiles import RUN_FORMAT
from llama_edu.tinytales import Validity
from llama_edu.train import PRETRAINED_DIR, load_run, save_checkpoint

FAST = ["--batch-size", "2", "--n-stories", "2", "--eval-stories", "1", "--eval-samples", "2"]


def make_base(folder, max_seq_len: int):
    """A run folder as `llama-edu train` writes it, with a tiny random model."""
    folder.mkdir()
    torch.manual_seed(0)
    args = ModelArgs(dim=32, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=512,
                     multiple_of=16, max_seq_len=max_seq_len)
    model = Llama(args)
    shutil.copyfile(PRETRAINED_DIR / "tokenizer.model", folder / "tokenizer.model")
    (folder / "config.json").write_text(json.dumps(
        {"format": RUN_FORMAT, "model": args.to_dict(), "train": {}}))
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(folder, model, optimizer, {"step": 0, "tokens": 0, "history": []},
                    torch.Generator())
    return folder


@pytest.fixture(scope="module")
def chat_base(tmp_path_factory):
    """A base with room for a story and a question (sft, lora)."""
    return make_base(tmp_path_factory.mktemp("base") / "run", max_seq_len=256)


@pytest.fixture(scope="module")
def story_base(tmp_path_factory):
    """A base with a short context, so that sampling stories is quick (rs, dpo)."""
    return make_base(tmp_path_factory.mktemp("short") / "run", max_seq_len=12)


@pytest.fixture
def base(request, chat_base, story_base):
    method = getattr(request, "param", "sft")
    return chat_base if method in ("sft", "lora") else story_base


class AcceptAll:
    """Judges every text valid, so that rejection sampling trains on a random model's text."""

    def is_valid(self, text: str) -> Validity:
        return Validity(True, "")


class ParityJudge:
    """Judges a text valid when its length is even: a random model then writes valid and
    invalid 'stories', so that rs and dpo train."""

    def is_valid(self, text: str) -> Validity:
        return Validity(len(text) % 2 == 0, "" if len(text) % 2 == 0 else "odd length")


def run(*argv: str) -> int:
    return cli.main(["finetune", *argv])


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(folder / "checkpoint" / "model.safetensors")


METHODS = ["sft", "lora", "rs", "dpo"]


@pytest.mark.parametrize("base, method", [(m, m) for m in METHODS], indirect=["base"])
def test_each_method_runs_end_to_end(base, tmp_path, capsys, method):
    out = tmp_path / method
    assert run("--method", method, "--base", str(base), "--out", str(out), "--steps", "2",
               *FAST) == 0
    printed = capsys.readouterr().out
    measure = "exact-match accuracy" if method in ("sft", "lora") else "valid stories"
    assert measure in printed and "2 steps" in printed
    model, tokenizer = load_run(out)  # the result loads like a training run
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2 and len(state["history"]) == 2
    if method in ("sft", "lora"):
        assert tokenizer.vocab_size == 512 + 4 and model.args.vocab_size == 516
    else:
        assert tokenizer.vocab_size == 512
    base_model, _ = load_run(base)
    moved = model.state_dict()["layers.0.attention.wq.weight"]
    if method in ("sft", "lora"):  # a chat run's weights, LoRA merged in, differ from the base
        assert not torch.equal(moved, base_model.state_dict()["layers.0.attention.wq.weight"])
    if method == "lora":
        meta = read_adapter_metadata(out / "adapter.safetensors")
        assert meta["r"] == 8 and meta["base_run"] == str(base.resolve())
        same = model.state_dict()["tok_embeddings.weight"][:512]  # not a LoRA target
        assert torch.equal(same, base_model.state_dict()["tok_embeddings.weight"])


@pytest.mark.parametrize("base, method", [(m, m) for m in METHODS], indirect=["base"])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(base, tmp_path, method,
                                                              monkeypatch):
    judge = ParityJudge() if method == "dpo" else AcceptAll()  # dpo needs valid and invalid
    monkeypatch.setattr(preference, "_judge", lambda tales: judge)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    common = ["--method", method, "--base", str(base), *FAST, "--lr", "1e-2"]
    if method == "dpo":
        common[common.index("--batch-size") + 1] = "4"
    if method == "rs":  # several optimiser steps in each round
        common += ["--rs-batch", "1"]
    assert run(*common, "--out", str(whole), "--steps", "2") == 0
    assert run(*common, "--out", str(parts), "--steps", "1") == 0
    after_one = weights(parts)
    assert run(*common, "--out", str(parts), "--steps", "2", "--resume") == 0
    a, b = weights(whole), weights(parts)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(after_one[k], b[k]) for k in b)  # the resumed steps did train


def test_a_used_folder_is_refused_and_left_as_it_was(base, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my notes")
    assert run("--method", "sft", "--base", str(base), "--out", str(foreign), *FAST) == 2
    assert "holds no fine-tuning run" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert run("--method", "sft", "--base", str(base), "--out", str(foreign), "--resume") == 2
    assert "not a fine-tuning run" in capsys.readouterr().err
    assert run("--method", "sft", "--base", str(base), "--out", str(base), *FAST) == 2
    assert (base / "checkpoint" / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no staging folder left behind


@pytest.mark.parametrize("base", ["rs"], indirect=True)
def test_a_finished_run_is_not_started_again_without_resume(base, tmp_path, capsys):
    out = tmp_path / "rs"
    args = ["--method", "rs", "--base", str(base), "--out", str(out), "--steps", "1", *FAST]
    assert run(*args) == 0
    before = weights(out)
    assert run(*args) == 2
    assert "already holds a fine-tuning run" in capsys.readouterr().err
    assert run(*args[:-len(FAST)], "--batch-size", "3", "--resume") == 2
    assert "settings differ" in capsys.readouterr().err
    after = weights(out)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("extra, message", [
    (["--method", "lora", "--rank", "0"], "rank must be a whole number >= 1"),
    (["--method", "lora", "--alpha", "0"], "alpha must be a number > 0"),
    (["--method", "lora", "--alpha", "-2"], "alpha must be a number > 0"),
    (["--method", "sft", "--steps", "0"], "steps must be a whole number >= 1"),
    (["--method", "sft", "--lr", "-1"], "lr must be a number > 0"),
    (["--method", "rs", "--rank", "4"], "--rank, --alpha and --targets are LoRA's settings"),
    (["--method", "dpo", "--rs-batch", "8"], "--rs-batch is rejection sampling's setting"),
    (["--method", "rs", "--rs-batch", "0"], "rs_batch must be a whole number >= 1"),
    (["--method", "lora", "--targets", "wz"], "target 'wz' matches no linear layer"),
    (["--method", "lora", "--targets", ","], "targets must name at least one layer"),
])
def test_bad_settings_get_one_clear_line(base, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert run("--base", str(base), "--out", str(out), *extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not out.exists()


def test_a_missing_base_is_named(tmp_path, capsys):
    out = tmp_path / "out"
    assert run("--method", "sft", "--base", str(tmp_path / "nope"), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "is not a folder" in err and "'pretrained'" in err and "Traceback" not in err
    assert not out.exists()


def test_an_unknown_method_is_refused_by_the_parser(base, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run("--method", "ppo", "--base", str(base), "--out", str(tmp_path / "out"))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'ppo'" in err and "Traceback" not in err


def test_lora_leaves_a_tied_output_layer_out_of_its_default_targets():
    from llama_edu.finetune import FinetuneConfig, _shape
    from llama_edu.lora import lora_layers

    args = ModelArgs(dim=32, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=512,
                     multiple_of=16, max_seq_len=16, tie_embeddings=True)
    model = _shape(FinetuneConfig("lora"), Llama(args), 516)
    names = set(lora_layers(model))
    assert "output" not in names and "layers.0.feed_forward.w2" in names
