"""The TinyTales model shipped inside the package: small, loadable, and as good as promised."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from llama_edu.data import TinyTales
from llama_edu.generate import generate
from llama_edu.train import PRETRAINED_DIR, load_pretrained, recommended_config, tales_report

ROOT = Path(__file__).resolve().parent.parent


def test_the_shipped_files_are_small_and_declared_as_package_data():
    files = [p for p in PRETRAINED_DIR.rglob("*") if p.is_file()]
    names = sorted(p.relative_to(PRETRAINED_DIR).as_posix() for p in files)
    assert names == [
        "checkpoint/model.safetensors",
        "checkpoint/state.json",
        "config.json",
        "tokenizer.model",
    ]
    assert sum(p.stat().st_size for p in files) <= 10 * 2**20
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["llama_edu"]
    package = ROOT / "llama_edu"
    declared = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    assert set(files) <= declared, "pyproject.toml would leave shipped files out of the wheel"


def test_it_loads_and_writes_tinytales_words():
    model, tok = load_pretrained()
    assert not model.training
    assert model.args.vocab_size == tok.vocab_size
    new = generate(model, [tok.bos_id], 80, stop_ids=[tok.eos_id])  # greedy
    text = tok.decode([t for t in new if t != tok.eos_id])
    assert text.startswith(("Once upon a time,", "One day,", "Long ago,", "One morning,",
                            "One sunny day,")), text
    words = text.replace(",", " ").replace(".", " ").split()
    vocabulary = TinyTales().vocabulary
    assert sum(w in vocabulary for w in words) / len(words) > 0.9, text


def test_it_closes_at_least_97_percent_of_the_gap():
    model, tok = load_pretrained()
    report = tales_report(model, tok, n_eval=300, n_samples=0, n_train_baseline=5000)
    assert math.isnan(report.valid_fraction)
    assert report.gap_closed >= 0.97, report


def test_the_recommended_runs():
    cpu, gpu = recommended_config("cpu"), recommended_config("cuda")
    def tokens(cfg):
        return cfg.max_steps * cfg.batch_size * cfg.seq_len

    assert tokens(cpu) < tokens(gpu)
    assert gpu.model_args().dim > cpu.model_args().dim
