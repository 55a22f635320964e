"""Training: the schedule, AdamW, checkpoints that resume bit-identically, bad input, torchrun."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from llama_edu import train as tr
from llama_edu.model import Llama

MICRO = dict(
    preset="tiny",
    model_overrides={"dim": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "multiple_of": 16},
    vocab_size=320,
    n_stories=400,
    seq_len=32,
    batch_size=8,
    max_steps=12,
    warmup_steps=3,
    eval_every=6,
    eval_batches=2,
    checkpoint_every=6,
)


def micro(**changes) -> tr.TrainConfig:
    return tr.TrainConfig(**{**MICRO, **changes})


def run(cfg, out, **kwargs):
    return tr.train(cfg, out, progress=False, **kwargs)


# --- pieces --------------------------------------------------------------------------------


def test_lr_schedule_shape():
    kw = dict(warmup_steps=10, max_steps=110, max_lr=1.0, min_lr=0.1)
    assert tr.lr_at(0, **kw) == 0.0
    assert tr.lr_at(5, **kw) == pytest.approx(0.5)
    assert tr.lr_at(10, **kw) == pytest.approx(1.0)
    assert tr.lr_at(60, **kw) == pytest.approx(0.55)  # halfway through the cosine
    assert tr.lr_at(110, **kw) == pytest.approx(0.1) and tr.lr_at(500, **kw) == 0.1
    values = [tr.lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_adamw_step_matches_torch():
    gen = torch.Generator().manual_seed(0)
    param = torch.randn(5, generator=gen)
    m, v = torch.zeros(5), torch.zeros(5)
    reference = torch.nn.Parameter(param.clone())
    opt = torch.optim.AdamW([reference], lr=0.1, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for step in range(1, 4):
        grad = torch.randn(5, generator=gen)
        param, m, v = tr.adamw_step(param, grad, m, v, step, 0.1, (0.9, 0.95), 1e-8, 0.1)
        reference.grad = grad.clone()
        opt.step()
    torch.testing.assert_close(param, reference.detach())


def test_random_windows_are_shifted_by_one_and_reproducible():
    tokens = torch.arange(100)
    x, y = tr.random_windows(tokens, 4, 10, torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (4, 10) and torch.equal(y, x + 1)
    x2, _ = tr.random_windows(tokens, 4, 10, torch.Generator().manual_seed(1))
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match="too few for windows of seq_len=200"):
        tr.random_windows(tokens, 4, 200, torch.Generator())


def test_no_weight_decay_on_norms_and_embeddings():
    model = Llama(micro().model_args())
    opt = tr.make_optimizer(model, micro())
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in opt.param_groups[0]["params"]}
    plain = {names[id(p)] for p in opt.param_groups[1]["params"]}
    assert opt.param_groups[1]["weight_decay"] == 0.0
    assert "tok_embeddings.weight" in plain and "norm.weight" in plain
    assert "layers.0.attention.wq.weight" in decayed and not any("norm" in n for n in decayed)


# --- runs ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return run(micro(), out), out


def test_training_lowers_the_loss_and_reports_bits_per_char(uninterrupted):
    result, out = uninterrupted
    assert result.stopped == "finished" and result.step == 12
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] - 0.5
    last = result.history[-1]
    assert last["val_bpc"] == pytest.approx(
        last["val_loss"]
        / math.log(2)
        / (
            sum(len(t) + 1 for t in tr.prepare_corpus(micro(), out).val_texts)
            / tr.prepare_corpus(micro(), out).val.numel()
        )
    )
    files = sorted(p.name for p in (out / "checkpoint").iterdir())
    assert files == ["model.safetensors", "optimizer.safetensors", "state.json"]
    assert not [p for p in out.iterdir() if p.name.startswith(".checkpoint")]


def test_interrupt_then_resume_is_bit_identical(uninterrupted, tmp_path):
    full, full_dir = uninterrupted

    def stop_at_six(record):
        if record["step"] == 6:
            raise KeyboardInterrupt

    first = run(micro(), tmp_path, callback=stop_at_six)
    assert first.stopped == "interrupted" and first.step == 6
    resumed = run(micro(), tmp_path, resume=True)
    assert resumed.step == 12
    strip = lambda h: [(r["step"], r["train_loss"], r.get("val_loss")) for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)
    a = load_file(full_dir / "checkpoint" / "model.safetensors")
    b = load_file(tmp_path / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    oa = load_file(full_dir / "checkpoint" / "optimizer.safetensors")
    ob = load_file(tmp_path / "checkpoint" / "optimizer.safetensors")
    assert all(torch.equal(oa[k], ob[k]) for k in oa)


def test_load_run_gives_the_trained_model(uninterrupted):
    result, out = uninterrupted
    model, tokenizer = tr.load_run(out)
    tokens = torch.tensor([tokenizer.encode("Once upon a time", bos=True)])
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), result.model(tokens), atol=0, rtol=0)


def test_resume_with_another_config_names_the_fields(uninterrupted, tmp_path):
    _, out = uninterrupted
    other = micro(model_overrides={**MICRO["model_overrides"], "n_layers": 3}, seq_len=16)
    with pytest.raises(ValueError) as info:
        run(other, out, resume=True)
    message = str(info.value)
    assert "model.n_layers: saved 2, now 3" in message and "train.seq_len" in message


def test_existing_run_or_foreign_folder_is_refused(uninterrupted, tmp_path):
    _, out = uninterrupted
    with pytest.raises(FileExistsError, match="already holds a training run"):
        run(micro(), out)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        run(micro(), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_corrupted_checkpoint_is_a_clear_error_and_nothing_is_overwritten(uninterrupted, tmp_path):
    _, out = uninterrupted
    copy = tmp_path / "run"
    import shutil

    shutil.copytree(out, copy)
    weights = copy / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    with pytest.raises(tr.CheckpointError, match="corrupted or truncated"):
        run(micro(), copy, resume=True)
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = micro(
        max_lr=1e4,
        min_lr=1e4,
        warmup_steps=0,
        grad_clip=1e9,
        max_steps=40,
        checkpoint_every=1,
        eval_every=1000,
    )
    result = run(cfg, tmp_path)
    assert result.stopped == "non-finite loss" and result.step < 40
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["step"] == result.step
    weights = load_file(tmp_path / "checkpoint" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_corpus_too_small_for_the_sequence_length(tmp_path):
    text = tmp_path / "small.txt"
    text.write_text("a tiny text\n" * 30)
    with pytest.raises(ValueError, match="seq_len"):
        run(micro(corpus=str(text), vocab_size=270, seq_len=512), tmp_path / "out")


# --- torchrun ------------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch.distributed as dist
    from safetensors.torch import save_file
    from llama_edu.train import TrainConfig, train
    cfg = TrainConfig(**json.loads(sys.argv[1]))
    result = train(cfg, sys.argv[2], progress=False)
    rank = dist.get_rank()
    save_file({k: v.contiguous() for k, v in result.model.state_dict().items()},
              os.path.join(sys.argv[3], f"rank{rank}.safetensors"))
    if rank == 0:
        with open(os.path.join(sys.argv[3], "history.json"), "w") as f:
            json.dump(result.history, f)
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_match_one_process(uninterrupted, tmp_path):
    full, _ = uninterrupted
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cfg = json.dumps(dataclasses.asdict(micro()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            cfg,
            str(tmp_path / "run"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r0 = load_file(tmp_path / "rank0.safetensors")
    r1 = load_file(tmp_path / "rank1.safetensors")
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    history = json.loads((tmp_path / "history.json").read_text())
    single = [h["train_loss"] for h in full.history]
    assert [h["train_loss"] for h in history] == pytest.approx(single, rel=1e-4, abs=1e-5)
