"""Training: the schedule, AdamW, checkpoints that resume bit-identically, bad input, torchrun."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch
from safetensors.torch import load_file
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from llama_edu import train as tr
from llama_edu.model import Llama
from llama_edu.runfiles import RunFolderError

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


@contextlib.contextmanager
def counting_steps():
    """Count the optimiser steps that complete (a real post-step hook on every optimiser)."""
    done = [0]

    def count(optimizer, args, kwargs):
        done[0] += 1

    handle = register_optimizer_step_post_hook(count)
    try:
        yield done
    finally:
        handle.remove()


def assert_same_as_uninterrupted(full, full_dir, resumed, out):
    """History, weights, optimiser state, random state and token count all bit-identical."""
    assert resumed.stopped == "finished" and resumed.step == full.step
    strip = lambda h: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)
    for name in ("model.safetensors", "optimizer.safetensors"):  # optimizer: + generator state
        a = load_file(full_dir / "checkpoint" / name)
        b = load_file(out / "checkpoint" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    sa = json.loads((full_dir / "checkpoint" / "state.json").read_text())
    sb = json.loads((out / "checkpoint" / "state.json").read_text())
    assert (sa["step"], sa["tokens"]) == (sb["step"], sb["tokens"])


def _raise_at(calls, when):
    """A hook that raises KeyboardInterrupt on its `when`-th call (counted in calls)."""

    def hook(*args):
        calls[0] += 1
        if calls[0] == when:
            raise KeyboardInterrupt

    return hook


def _sigint_at(calls, when, times):
    """A hook that sends this process `times` real SIGINTs (Ctrl-C) on its `when`-th call."""

    def hook(*args):
        calls[0] += 1
        if calls[0] == when:
            for _ in range(times):  # to the main thread, as the terminal's Ctrl-C arrives
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                time.sleep(0.01)  # Python runs the handler here, before the next signal

    return hook


@contextlib.contextmanager
def interrupting(moment):
    """Interrupt a run at one moment; yields extra keyword arguments for train()."""
    calls = [0]
    if moment == "between steps (callback after step 6)":

        def stop_at_six(record):
            if record["step"] == 6:
                raise KeyboardInterrupt

        yield {"callback": stop_at_six}
        return
    if moment == "optimizer step, before the update (step 4)":
        handle = register_optimizer_step_pre_hook(_raise_at(calls, 4))
    elif moment == "optimizer step, after the update (step 9)":
        handle = register_optimizer_step_post_hook(_raise_at(calls, 9))
    elif moment == "forward pass (step 8)":
        hook = _raise_at(calls, 8)
        handle = torch.nn.modules.module.register_module_forward_pre_hook(
            lambda module, args: hook() if isinstance(module, Llama) and module.training else None
        )
    elif moment == "evaluation forward pass (step 6)":
        hook = _raise_at(calls, 1)
        handle = torch.nn.modules.module.register_module_forward_pre_hook(
            lambda module, args: hook() if isinstance(module, Llama) and not module.training
            else None
        )
    elif moment == "one real Ctrl-C inside the optimizer step (step 5)":
        handle = register_optimizer_step_post_hook(_sigint_at(calls, 5, 1))
    elif moment == "two real Ctrl-C inside the optimizer step (step 10)":
        handle = register_optimizer_step_pre_hook(_sigint_at(calls, 10, 2))
    else:
        raise AssertionError(moment)
    try:
        yield {}
    finally:
        handle.remove()


def test_callback_every_adds_the_records_of_every_nth_step(tmp_path):
    seen = []
    result = run(micro(max_steps=8, eval_every=6), tmp_path / "run", callback=seen.append,
                 callback_every=4)
    assert [r["step"] for r in seen] == [4, 6, 8]  # steps 4 and 8, and the evaluations 6 and 8
    assert ["val_loss" in r for r in seen] == [False, True, True]
    assert seen == [r for r in result.history if r["step"] in (4, 6, 8)]
    only_evals = []
    run(micro(max_steps=8, eval_every=6), tmp_path / "again", callback=only_evals.append)
    assert [r["step"] for r in only_evals] == [6, 8]


@pytest.mark.parametrize("bad", [0, -1, True])
def test_callback_every_must_be_a_positive_number_of_steps(bad, tmp_path):
    with pytest.raises(ValueError, match="callback_every"):
        run(micro(), tmp_path / "run", callback=print, callback_every=bad)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "moment, stopped_at",
    [
        ("between steps (callback after step 6)", 6),
        ("optimizer step, before the update (step 4)", 3),
        ("optimizer step, after the update (step 9)", 8),  # the applied update is undone
        ("forward pass (step 8)", 7),
        ("evaluation forward pass (step 6)", 5),
        ("one real Ctrl-C inside the optimizer step (step 5)", 5),  # step 5 finishes first
        ("two real Ctrl-C inside the optimizer step (step 10)", 9),  # second: stop at once
    ],
)
def test_interrupt_anywhere_then_resume_is_bit_identical(
    uninterrupted, tmp_path, moment, stopped_at
):
    full, full_dir = uninterrupted
    handler = signal.getsignal(signal.SIGINT)
    with interrupting(moment) as extra:
        first = run(micro(), tmp_path, **extra)
    assert first.stopped == "interrupted" and first.step == stopped_at
    assert signal.getsignal(signal.SIGINT) is handler  # the previous handler is back
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["step"] == stopped_at
    with counting_steps() as done:
        resumed = run(micro(), tmp_path, resume=True)
    assert done[0] == full.step - stopped_at  # only the remaining steps (a restart does all 12)
    assert_same_as_uninterrupted(full, full_dir, resumed, tmp_path)


def test_resume_uses_checkpoint_old_when_a_save_died_between_its_renames(
    uninterrupted, tmp_path, capsys
):
    full, full_dir = uninterrupted
    with interrupting("between steps (callback after step 6)") as extra:
        run(micro(), tmp_path, **extra)
    os.replace(tmp_path / "checkpoint", tmp_path / ".checkpoint.old")  # the first rename only
    capsys.readouterr()
    with counting_steps() as done:
        resumed = run(micro(), tmp_path, resume=True)
    out = capsys.readouterr().out
    assert f"resuming from {tmp_path / '.checkpoint.old'}" in out
    assert done[0] == 6
    assert_same_as_uninterrupted(full, full_dir, resumed, tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint", "config.json", "tokenizer.model", "tokenizer.vocab"]


def test_a_failed_save_keeps_the_only_checkpoint(uninterrupted, tmp_path):
    _, full_dir = uninterrupted
    shutil.copytree(full_dir, tmp_path / "run")
    run_dir = tmp_path / "run"
    os.replace(run_dir / "checkpoint", run_dir / ".checkpoint.old")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    model = Llama(micro().model_args())
    with pytest.raises(TypeError):  # state.json cannot hold an object: the save fails midway
        tr.save_checkpoint(run_dir, model, tr.make_optimizer(model, micro()),
                           {"step": 1, "bad": object()}, torch.Generator())
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_resume_without_a_run_or_a_checkpoint_says_how_to_start(uninterrupted, tmp_path):
    _, full_dir = uninterrupted
    with pytest.raises(FileNotFoundError, match="leave out resume=True"):
        run(micro(), tmp_path / "new", resume=True)
    assert not (tmp_path / "new").exists()
    no_ckpt = tmp_path / "no_checkpoint"
    no_ckpt.mkdir()
    for name in ("config.json", "tokenizer.model"):
        shutil.copy(full_dir / name, no_ckpt / name)
    with pytest.raises(tr.CheckpointError, match="no checkpoint to resume from.*overwrite=True"):
        run(micro(), no_ckpt, resume=True)
    assert sorted(p.name for p in no_ckpt.iterdir()) == ["config.json", "tokenizer.model"]


def test_resume_in_a_foreign_folder_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"app": 1}')
    (tmp_path / "precious.txt").write_text("mine")
    with pytest.raises(RunFolderError, match=f"{tmp_path}.*not a training run"):
        run(micro(), tmp_path, resume=True)
    assert (tmp_path / "precious.txt").read_text() == "mine"
    assert (tmp_path / "config.json").read_text() == '{"app": 1}'


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


# --- torch.compile on the CPU ---------------------------------------------------------------


@pytest.mark.skipif(not shutil.which("c++") and not shutil.which("g++"), reason="no C++ compiler")
def test_compile_on_the_cpu_trains_like_eager(uninterrupted, tmp_path):
    eager, _ = uninterrupted
    result = run(micro(compile=True, device="cpu"), tmp_path)
    assert result.stopped == "finished" and result.step == 12
    # the same run: fused kernels round differently, so the losses agree closely, not exactly
    for ours, theirs in zip(result.history, eager.history, strict=True):
        assert ours["step"] == theirs["step"]
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-3)


def test_compile_on_the_cpu_without_a_compiler_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no c++, g++ or clang++ on it
    with pytest.raises(RuntimeError, match=r"needs a C\+\+ compiler.*apt install g\+\+"):
        run(micro(compile=True, device="cpu"), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before the run folder was made


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
