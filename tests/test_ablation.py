"""The ablation lab's runner, its floor arithmetic and its table."""

from __future__ import annotations

import math

import pytest

from llama_edu import ablation
from llama_edu.ablation import LabResult, Variant
from llama_edu.data import TinyTales


@pytest.fixture(scope="module")
def data() -> ablation.LabData:
    return ablation.lab_data(n_stories=300, n_val=20, vocab_size=320)


def test_floor_is_the_exact_entropy_of_the_held_out_stories(data: ablation.LabData) -> None:
    tales = TinyTales()
    bits = sum(-tales.log_prob(t) / math.log(2) for t in data.val_texts)  # the parser's way
    chars = sum(len(t) + 1 for t in data.val_texts)
    assert data.floor == pytest.approx(bits / chars, rel=1e-9)
    assert data.floor < data.bigram


def test_a_short_run_is_measured_against_the_floor(data: ablation.LabData) -> None:
    result = ablation.run_variant(data, ablation.BASELINE, steps=30, seed=0, smooth=10)
    assert not result.diverged and result.curve_steps == [10, 20, 30]
    uniform = math.log2(data.tokenizer.vocab_size) / data.train_chars_per_token - data.floor
    assert 0 < result.excess < uniform  # better than guessing, no better than the truth
    assert result.curve_excess[-1] < result.curve_excess[0]
    bpc = data.floor + result.excess
    assert result.gap_closed == pytest.approx((data.bigram - bpc) / (data.bigram - data.floor))
    # the lab's model, 2 fp32 tensors (k and v) per layer, 2 kv heads of width 16
    assert result.kv_bytes_per_token == 2 * 2 * 2 * 16 * 4
    again = ablation.run_variant(data, ablation.BASELINE, steps=30, seed=0, smooth=10)
    assert again.excess == result.excess  # a seed fixes the run
    other = ablation.run_variant(data, ablation.BASELINE, steps=30, seed=1, smooth=10)
    assert other.excess != result.excess


def test_a_huge_learning_rate_is_reported_as_diverged(data: ablation.LabData) -> None:
    wild = Variant("max_lr 1e4", train={"max_lr": 1e4, "min_lr": 1e4, "warmup_steps": 0})
    result = ablation.run_variant(data, wild, steps=30, smooth=10)
    assert result.diverged and result.excess == math.inf
    table = ablation.markdown_table(ablation.summarise([fake("Llama (baseline)", 0.2), result]))
    assert "| max_lr 1e4 | diverged |" in table


def test_variants_are_checked(data: ablation.LabData) -> None:
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        ablation.run_variant(data, Variant("typo", train={"max_lrr": 1.0}), steps=10, smooth=5)
    with pytest.raises(ValueError, match="norm_position must be one of"):
        ablation.run_variant(data, Variant("typo", {"norm_position": "mid"}), steps=10, smooth=5)
    names = [v.name for v in ablation.all_variants()]
    assert len(names) == len(set(names)) and names[0] == "Llama (baseline)"


def test_every_switch_value_has_a_variant() -> None:
    from llama_edu.model import SWITCHES

    used = {(k, v) for var in ablation.all_variants() for k, v in var.model.items()}
    for name, values in SWITCHES.items():
        for value in values[1:]:
            assert (name, value) in used, (name, value)
    assert {v.model.get("n_kv_heads") for v in ablation.all_variants()} >= {1, 4}


def fake(name: str, excess: float, seed: int = 0) -> LabResult:
    return LabResult(name, seed, 10, [10], [excess], excess, 0.5, False, 1000, 256, 1.0)


def test_summary_and_verdicts() -> None:
    results = [fake("Llama (baseline)", x, s) for s, x in enumerate([0.20, 0.22, 0.24])]
    results += [fake("close", 0.25), fake("worse", 0.40), fake("better", 0.10)]
    rows = ablation.summarise(results)
    base = rows[0]
    assert (base.n_seeds, base.excess_min, base.excess_max) == (3, 0.20, 0.24)
    assert base.excess_mean == pytest.approx(0.22) and base.spread == pytest.approx(0.04)
    table = ablation.markdown_table(rows)
    assert "| close |" in table and "within noise (+0.030)" in table  # 0.03 <= spread 0.04
    assert "worse by 0.180" in table and "better by 0.120" in table
    with pytest.raises(ValueError, match="no 'Llama \\(baseline\\)'"):
        ablation.markdown_table(rows[1:])
