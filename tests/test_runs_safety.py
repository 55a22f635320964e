"""Nothing lost: what --overwrite and export_hf may replace, atomic writes, and plain CLI errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import llama_edu
from llama_edu import interop, runfiles
from llama_edu import train as tr
from llama_edu.cli import main
from llama_edu.model import Llama

SMALL = dict(
    preset="tiny",
    model_overrides={"dim": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "multiple_of": 16},
    vocab_size=320,
    n_stories=400,
    seq_len=32,
    batch_size=8,
    max_steps=2,
    warmup_steps=1,
    eval_every=2,
    eval_batches=1,
    checkpoint_every=2,
)
CLI_SMALL = ["--preset", "tiny", "--vocab-size", "320", "--n-stories", "400", "--seq-len", "32",
             "--batch-size", "8", "--max-steps", "2"]  # fmt: skip
ASSET = Path(llama_edu.__file__).parent / "assets" / "tinytales"


def small(**changes) -> tr.TrainConfig:
    return tr.TrainConfig(**{**SMALL, **changes})


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below folder (relative path -> bytes), to show that nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "done"
    tr.train(small(), out, progress=False)
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    shutil.copytree(finished_run, tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def foreign(tmp_path) -> Path:
    """A folder that some other program made: a config.json that is not ours, and a user file."""
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "config.json").write_text('{"app": 1}')
    (folder / "precious.txt").write_text("irreplaceable")
    return folder


def one_error_line(capsys, command: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"llama-edu {command}: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


# --- what may be replaced ------------------------------------------------------------------


def test_a_run_carries_the_format_marker(finished_run):
    config = json.loads((finished_run / "config.json").read_text())
    assert config["format"] == runfiles.RUN_FORMAT
    names = sorted(p.name for p in finished_run.iterdir())
    assert names == ["checkpoint", "config.json", "tokenizer.model", "tokenizer.vocab"]
    assert not [p for p in finished_run.parent.iterdir() if p.name.startswith(".")]  # no staging


def test_overwrite_refuses_a_foreign_folder(foreign, capsys):
    before = snapshot(foreign)
    with pytest.raises(FileExistsError, match=f"{foreign} is not empty and holds no training run"):
        tr.train(small(), foreign, overwrite=True, progress=False)
    assert main(["train", "--out", str(foreign), "--overwrite", *CLI_SMALL]) == 2
    assert str(foreign) in one_error_line(capsys, "train")
    assert snapshot(foreign) == before
    assert sorted(p.name for p in foreign.parent.iterdir()) == ["app"]  # no staging left over


def test_overwrite_refuses_a_run_that_also_holds_user_files(run_copy):
    (run_copy / "notes.txt").write_text("what I tried")
    (run_copy / "checkpoint" / "mine.bin").write_bytes(b"\x00")
    before = snapshot(run_copy)
    with pytest.raises(FileExistsError, match="also checkpoint/mine.bin, notes.txt"):
        tr.train(small(), run_copy, overwrite=True, progress=False)
    assert snapshot(run_copy) == before


def test_overwrite_with_a_mistyped_corpus_leaves_the_old_run_intact(run_copy, capsys):
    before = snapshot(run_copy)
    code = main(["train", "--corpus", str(run_copy.parent / "storeis.txt"), "--out",
                 str(run_copy), "--overwrite", *CLI_SMALL])  # fmt: skip
    assert code == 2 and "storeis.txt" in one_error_line(capsys, "train")
    assert snapshot(run_copy) == before
    assert sorted(p.name for p in run_copy.parent.iterdir()) == ["run"]


@pytest.mark.parametrize("legacy", [False, True], ids=["marked run", "run from before the marker"])
def test_overwrite_replaces_a_run_made_by_train(run_copy, legacy):
    if legacy:  # what runs written before the marker carry
        config = json.loads((run_copy / "config.json").read_text())
        config["format"] = runfiles.LEGACY_RUN_FORMAT
        (run_copy / "config.json").write_text(json.dumps(config))
        (run_copy / ".checkpoint.old").mkdir()  # a leftover of an interrupted save
        shutil.copy(run_copy / "checkpoint" / "state.json", run_copy / ".checkpoint.old")
    result = tr.train(small(seed=1), run_copy, overwrite=True, progress=False)
    assert result.stopped == "finished"
    config = json.loads((run_copy / "config.json").read_text())
    assert config["format"] == runfiles.RUN_FORMAT and config["train"]["seed"] == 1
    names = sorted(p.name for p in run_copy.iterdir())
    assert names == ["checkpoint", "config.json", "tokenizer.model", "tokenizer.vocab"]
    assert sorted(p.name for p in run_copy.parent.iterdir()) == ["run"]


def test_overwrite_through_a_symlink_is_refused_and_the_run_kept(run_copy):
    link = run_copy.parent / "link"
    link.symlink_to(run_copy, target_is_directory=True)
    before = snapshot(run_copy)
    with pytest.raises(FileExistsError, match=f"{link} is a symbolic link"):
        tr.train(small(seed=1), link, overwrite=True, progress=False)
    assert snapshot(run_copy) == before and link.resolve() == run_copy
    assert sorted(p.name for p in run_copy.parent.iterdir()) == ["link", "run"]


def test_a_new_run_in_an_empty_folder_keeps_the_folder(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    inode = out.stat().st_ino
    tr.train(small(), out, progress=False)
    assert out.stat().st_ino == inode and (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_export_hf_refuses_a_foreign_folder_and_replaces_its_own(foreign, tmp_path):
    model = Llama(small().model_args())
    before = snapshot(foreign)
    with pytest.raises(FileExistsError, match=f"{foreign} holds files and is not an export"):
        interop.export_hf(model, foreign)
    assert snapshot(foreign) == before
    out = tmp_path / "export"
    interop.export_hf(model, out)
    assert json.loads((out / "config.json").read_text())[runfiles.EXPORT_KEY] == 1
    with torch.no_grad():
        model.norm.weight.fill_(2.0)
    interop.export_hf(model, out)  # replaces its own earlier export
    assert torch.equal(interop.load_hf(out).norm.weight, model.norm.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app", "export"]  # nothing staged
    (out / "README.md").write_text("my notes")
    before = snapshot(out)
    with pytest.raises(FileExistsError, match="also holds README.md"):
        interop.export_hf(model, out)
    assert snapshot(out) == before


# --- atomic writes -------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name fds")
def test_checkpoint_files_and_folder_reach_the_disk_before_the_rename(run_copy, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", f"{src} -> {dst}"))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    model = Llama(small().model_args())
    tr.save_checkpoint(run_copy, model, tr.make_optimizer(model, small()), {"step": 0},
                       torch.Generator())  # fmt: skip
    into_place = next(i for i, (kind, what) in enumerate(events)
                      if kind == "replace" and what.endswith(f"-> {run_copy / 'checkpoint'}"))
    staging = events[into_place][1].split(" -> ")[0]
    synced = {what for kind, what in events[:into_place] if kind == "fsync"}
    for name in (*tr.CHECKPOINT_FILES, ""):
        assert str(Path(staging) / name) in synced, name
    assert ("fsync", str(run_copy)) in events[into_place:]  # the rename itself is flushed


def test_atomic_write_text_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "config.json"
    target.write_text("old")
    with pytest.raises(UnicodeEncodeError):
        runfiles.atomic_write_text(target, "new \udcff")  # cannot be encoded halfway through
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["config.json"]
    runfiles.atomic_write_text(target, "new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["config.json"]


# --- clear errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"format": "llama_edu.run/1", "model": {', "is not valid JSON"),
        ('{"format": "llama_edu.run/1", "model": {}, "extra": 1}', "unknown key 'extra'"),
        ('{"format": "llama_edu.run/1", "model": {"dim": 8, "depth": 2}}', "'model.depth'"),
        ('{"app": 1}', "unknown key 'app'; no 'model' object"),
    ],
    ids=["invalid JSON", "unknown key", "unknown model field", "foreign config"],
)
def test_load_run_names_the_bad_config_file(run_copy, text, expected):
    (run_copy / "config.json").write_text(text)
    with pytest.raises(runfiles.RunFolderError) as info:
        tr.load_run(run_copy)
    assert str(run_copy / "config.json") in str(info.value) and expected in str(info.value)


def test_load_hf_names_a_truncated_safetensors_file(tmp_path):
    out = interop.export_hf(Llama(small().model_args()), tmp_path / "export")
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    with pytest.raises(ValueError, match=f"{weights} is truncated or not a safetensors file"):
        interop.load_hf(out)


def test_the_shipped_model_still_loads():
    config = json.loads((ASSET / "config.json").read_text())
    assert config["format"] == runfiles.RUN_FORMAT
    model, tokenizer = tr.load_pretrained()
    assert model.args.dim == 128 and tokenizer.vocab_size == 512


@pytest.fixture
def corrupted_asset(tmp_path) -> Path:
    copy = tmp_path / "corrupted"
    shutil.copytree(ASSET, copy)
    weights = copy / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return copy


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--corpus", "{tmp}", "--out", "{tmp}/run"], "is a folder"),
        (["train", "--out", "{tmp}/file.txt", "--max-steps", "1"], "is a file, not a folder"),
        (["train", "--minutes", "0", "--out", "{tmp}/run"], "--minutes must be above 0"),
        (["train", "--minutes", "-2", "--out", "{tmp}/run"], "--minutes must be above 0"),
        (["train", "--out", "{tmp}/run", "--resume"], "holds no training run to resume"),
        (["sample", "--checkpoint", str(ASSET), "-n", "-1"], "-n must be at least 1"),
        (["sample", "--checkpoint", str(ASSET), "--prompt", "caf\udce9"], "not valid UTF-8"),
        (["sample", "--checkpoint", "{tmp}/corrupted"], "corrupted or truncated"),
        (["sample", "--checkpoint", "{tmp}"], "has no config.json"),
    ],
)
def test_cli_errors_are_one_plain_line(argv, expected, tmp_path, corrupted_asset, capsys):
    (tmp_path / "file.txt").write_text("not a folder")
    before = snapshot(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    assert expected in one_error_line(capsys, argv[0])
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_cuda(tmp_path, capsys):
    assert main(["train", "--device", "cuda", "--out", str(tmp_path / "run"), *CLI_SMALL]) == 2
    assert "'cuda', which does not work on this machine" in one_error_line(capsys, "train")


def test_cli_subprocess_non_utf8_prompt_gives_no_traceback():
    env = {**os.environ, "PYTHONPATH": str(Path(llama_edu.__file__).parent.parent)}
    done = subprocess.run(
        [sys.executable, "-m", "llama_edu.cli", "sample", "--checkpoint", str(ASSET).encode(),
         "--prompt", b"caf\xe9 au lait"],  # Latin-1 bytes: Python decodes them to surrogates
        capture_output=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == b""
    err = done.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("llama-edu sample: --prompt is not valid UTF-8")
