"""Is my loss normal? The reference band, verdicts on fabricated runs, the one-line report."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from llama_edu import loss_report as lr
from llama_edu.train import TrainConfig, recommended_config

CONFIG = {k: v for k, v in dataclasses.asdict(recommended_config("cpu")).items() if k != "seed"}


def fake_band() -> dict:
    """A band of 60 steps: blocks of 10, training loss 5 - step/20 +- 0.05, excess 1.0 - ..."""
    steps = list(range(10, 61, 10))
    center = [5 - s / 20 for s in steps]
    evals = [30, 60]
    excess = [0.5, 0.1]
    return {
        "config": {**CONFIG, "max_steps": 60, "warmup_steps": 10, "eval_every": 30},
        "seeds": [1, 2, 3],
        "train_block": 10,
        "train_steps": steps,
        "train_loss": {"min": [c - 0.05 for c in center], "median": center,
                       "max": [c + 0.05 for c in center]},
        "eval_steps": evals,
        "val_excess_bpc": {"min": [e - 0.01 for e in excess], "median": excess,
                           "max": [e + 0.01 for e in excess]},
    }


def history(shift: float = 0.0, excess_shift: float = 0.0, steps: int = 60) -> list[dict]:
    """A run that follows the band's centre, moved up by shift nats and excess_shift bits/char."""
    out = []
    for s in range(1, steps + 1):
        block_end = math.ceil(s / 10) * 10
        record = {"step": s, "train_loss": 5 - block_end / 20 + shift}
        if s in (30, 60):
            excess = {30: 0.5, 60: 0.1}[s] + excess_shift
            record.update(val_loss=1.0, val_bpc=0.35 + excess, val_excess_bpc=excess,
                          floor_bpc=0.35, bigram_bpc=3.1, unigram_bpc=4.4)
        out.append(record)
    return out


def config(**changes) -> dict:
    return {**fake_band()["config"], "seed": 0, **changes}


def test_a_run_on_the_band_centre_is_inside():
    verdict = lr.compare_with_band(history(), fake_band(), config())
    assert verdict.status == "inside" and "inside the reference band" in verdict.message
    assert verdict.outside_steps == ()


def test_small_seed_noise_is_still_inside():
    # 0.08 nats is beyond the band's max (0.05) but within the widened band (width 0.1)
    assert lr.compare_with_band(history(shift=0.08), fake_band()).status == "inside"


def test_a_run_far_above_names_the_learning_rate_and_the_loss_bug():
    verdict = lr.compare_with_band(history(shift=0.5, excess_shift=0.3), fake_band(), config())
    assert verdict.status == "above"
    assert "learning rate" in verdict.message and "warm-up" in verdict.message
    assert "shifted by exactly one" in verdict.message and "batch" in verdict.message
    assert 60 in verdict.outside_steps and 20 in verdict.outside_steps


def test_a_run_far_below_the_floor_points_at_a_leak():
    verdict = lr.compare_with_band(history(shift=-1.0, excess_shift=-0.3), fake_band())
    assert verdict.status == "below"
    assert "below the entropy floor" in verdict.message and "targets equal to the inputs" in (
        verdict.message)


def test_only_the_last_evaluation_outside_is_outside():
    verdict = lr.compare_with_band(history(excess_shift=0.2), fake_band())
    assert verdict.status == "above" and verdict.outside_steps == (30, 60)


def test_the_warm_up_blocks_are_not_judged():
    runs = history()
    for r in runs[:10]:
        r["train_loss"] += 3  # a bad start inside the warm-up of 10 steps
    assert lr.compare_with_band(runs, fake_band()).status == "inside"


def test_another_configuration_is_not_compared():
    verdict = lr.compare_with_band(history(shift=2), fake_band(), config(max_lr=1e-2, seq_len=64))
    assert verdict.status == "not comparable"
    assert "does not apply" in verdict.message
    assert "max_lr: yours 0.01" in verdict.message and "seq_len: yours 64" in verdict.message
    assert len(verdict.differences) == 2


def test_seed_device_and_a_trainconfig_are_accepted():
    cfg = TrainConfig(**{**fake_band()["config"], "seed": 7, "device": "cpu"})
    assert lr.config_differences(cfg, fake_band()) == []


def test_a_history_without_the_floor_is_not_comparable():
    runs = history()
    for r in runs:
        r.pop("val_excess_bpc", None)
    verdict = lr.compare_with_band(runs, fake_band())
    assert verdict.status == "not comparable" and "entropy floor" in verdict.message


def test_missing_fields_give_clear_errors():
    with pytest.raises(ValueError, match="record 3 has no 'step' or 'train_loss'"):
        lr.compare_with_band([*history()[:3], {"step": 4}], fake_band())
    with pytest.raises(ValueError, match="history is empty"):
        lr.compare_with_band([], fake_band())
    band = fake_band()
    del band["val_excess_bpc"]
    with pytest.raises(ValueError, match="lacks val_excess_bpc"):
        lr.compare_with_band(history(), band)
    band = fake_band()
    band["train_loss"]["max"] = band["train_loss"]["max"][:-1]
    with pytest.raises(ValueError, match="train_loss.max must have one value per entry"):
        lr.check_band(band)


def test_a_short_run_is_judged_on_what_it_has():
    assert lr.compare_with_band(history(steps=35), fake_band()).status == "inside"
    assert lr.compare_with_band(history(shift=1, steps=35), fake_band()).status == "above"


def test_a_run_still_in_its_warm_up_is_too_early_to_judge():
    assert lr.compare_with_band(history(steps=9), fake_band()).status == "too early"


def test_block_means_skip_incomplete_blocks():
    runs = [{"step": s, "train_loss": float(s)} for s in range(1, 26)]
    assert lr.block_means(runs, 10) == {10: 5.5, 20: 15.5}


def test_gap_report_with_and_without_a_floor():
    record = {"step": 600, "val_bpc": 0.4, "val_excess_bpc": 0.05, "gap_closed": 0.9812,
              "floor_bpc": 0.35, "bigram_bpc": 3.05, "unigram_bpc": 4.4}
    line = lr.gap_report(record)
    assert "0.050 above the floor 0.350" in line and "98.1% of the gap" in line
    other = lr.gap_report({"val_bpc": 2.5}, {"unigram_bpc": 4.4, "bigram_bpc": 3.3})
    assert "unigram 4.400" in other and "bigram 3.300" in other and "no entropy floor" in other
    with pytest.raises(ValueError, match="no 'val_bpc'"):
        lr.gap_report({"step": 3})


def test_the_shipped_band_is_chapter_09s_run(tmp_path):
    band = lr.load_band()
    assert lr.config_differences(recommended_config("cpu"), band) == []
    assert 0 not in band["seeds"] and len(band["seeds"]) >= 2
    assert band["eval_steps"][-1] == band["config"]["max_steps"]
    for curve in ("train_loss", "val_excess_bpc"):
        lo, mid, hi = (band[curve][k] for k in ("min", "median", "max"))
        assert all(a <= b <= c for a, b, c in zip(lo, mid, hi, strict=True))
    assert 0 < band["val_excess_bpc"]["median"][-1] < 0.2
    assert len(json.dumps(band)) < 20_000
    with pytest.raises(FileNotFoundError, match="make_reference_band"):
        lr.load_band(tmp_path / "none.json")


# --- the numbers in a real run and in the command line ---------------------------------------

CLI_SMALL = ["--preset", "tiny", "--vocab-size", "320", "--n-stories", "400", "--seq-len", "32",
             "--batch-size", "8", "--max-steps", "4"]  # fmt: skip


def test_tiny_tales_evaluations_carry_the_floor_of_their_own_validation_stories(tmp_path):
    from llama_edu.data import TinyTales, bigram_bits_per_char
    from llama_edu.train import train

    cfg = TrainConfig(model_overrides={"dim": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1,
                                       "multiple_of": 16},
                      vocab_size=320, n_stories=400, seq_len=32, batch_size=8, max_steps=4,
                      warmup_steps=1, eval_every=2, eval_batches=1, seed=3)
    result = train(cfg, tmp_path / "run", progress=False)
    # the validation stories as prepare_corpus draws them: 200 stories, seed + 10**6
    val = TinyTales().sample(200, seed=3 + 10**6)
    floor = sum(-s.log_prob / math.log(2) for s in val) / sum(len(s.text) + 1 for s in val)
    train_texts = [s.text for s in TinyTales().sample(400, seed=3)]
    bigram = bigram_bits_per_char(train_texts, [s.text for s in val])
    evals = [r for r in result.history if "val_loss" in r]
    assert [r["step"] for r in evals] == [2, 4]
    for r in evals:
        assert r["floor_bpc"] == pytest.approx(floor, rel=1e-9)
        assert r["val_excess_bpc"] == pytest.approx(r["val_bpc"] - floor, rel=1e-9)
        assert r["gap_closed"] == pytest.approx((bigram - r["val_bpc"]) / (bigram - floor))
    assert result.baselines["floor_bpc"] == pytest.approx(floor, rel=1e-9)
    assert 0.3 < floor < 0.4 < result.baselines["bigram_bpc"] < result.baselines["unigram_bpc"]


def test_cli_train_prints_excess_and_gap_at_each_evaluation_and_at_the_end(tmp_path, capsys):
    from llama_edu.cli import main

    assert main(["train", "--out", str(tmp_path / "run"), *CLI_SMALL]) == 0
    out = capsys.readouterr().out.splitlines()
    evals = [line for line in out if line.startswith("step ")]
    assert len(evals) == 1 and evals[0].startswith("step 4: val loss")  # eval_every 100: the end
    end = [line for line in out if line.startswith("at the end: ")]
    assert len(end) == 1
    for line in (evals[0], end[0]):
        assert "above the floor" in line and "of the gap from the bigram" in line


def test_cli_train_on_another_corpus_prints_the_baselines(tmp_path, capsys):
    from llama_edu.cli import main
    from llama_edu.data import python_docs_text

    text = tmp_path / "docs.txt"
    text.write_text(python_docs_text(200_000), encoding="utf-8")
    argv = ["train", "--corpus", str(text), "--out", str(tmp_path / "run"), *CLI_SMALL,
            "--vocab-size", "400"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "unigram" in out and "bigram" in out and "no entropy floor" in out
    assert "above the floor" not in out
