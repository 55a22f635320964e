"""The pure logic of benchmarks/bench_posttrain.py: optimizer memory, sample entropy, the tables."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "bench_posttrain", REPO / "benchmarks" / "bench_posttrain.py"
)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _sum_loss(model: nn.Module) -> torch.Tensor:
    return model(torch.ones(2, 3)).sum()


def test_optimizer_state_bytes_counts_adamw_state_of_trainable_parameters_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2))
    before = [p.detach().clone() for p in model.parameters()]
    # all trainable: 15 + 5 + 10 + 2 = 32 numbers, two fp32 moments each, one fp32 step per tensor
    assert bench.optimizer_state_bytes(model, _sum_loss) == 32 * 2 * 4 + 4 * 4
    model[0].requires_grad_(False)  # now only the 10 + 2 numbers of the second layer
    assert bench.optimizer_state_bytes(model, _sum_loss) == 12 * 2 * 4 + 2 * 4
    # the step is taken on a copy: the model itself is unchanged and has no gradients
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        bench.optimizer_state_bytes(model, _sum_loss)


class _Uniform(nn.Module):
    """Logits all zero over 8 ids: every token costs exactly 3 bits."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*ids.shape, 8)


class _Tok:
    bos_id, eos_id = 1, 2

    def decode(self, ids):
        return "ab" * len(list(ids))  # two characters per token


def test_sample_entropy_counts_the_eos_as_one_newline_character():
    # sample 1: one token and eos: 6 bits over "ab" + newline = 3 chars; sample 2: two tokens,
    # cut off without eos: 6 bits over 4 chars
    result = bench.sample_entropy(_Uniform(), _Tok(), [[5, 2], [5, 6]])
    assert math.isclose(result["total"], 12 / 7)
    assert math.isclose(result["mean_per_sample"], (6 / 3 + 6 / 4) / 2)


def test_markdown_tables_show_each_row_and_the_share_of_full_fine_tuning():
    rows = [
        {"row": "base", "method": "shipped model", "accuracy": 0.0, "valid": 0.57,
         "distinct": 1.0, "entropy": 0.36, "excess": 0.0163},
        {"row": "sft", "method": "SFT", "accuracy": 0.88, "trainable": 1000, "seconds": 61.4,
         "optimizer_bytes": 8192, "valid": 0.5, "distinct": 0.99, "entropy": 0.4, "excess": 0.02,
         "instructions": 0.125},
        {"row": "lora", "method": "LoRA r=1", "accuracy": 0.5, "trainable": 25, "seconds": 40.0,
         "optimizer_bytes": 2048},
    ]
    text = bench.markdown_tables(rows, floor=0.3524)
    first, floor, second = text.split("\n\n")
    assert "| shipped model | 0.0% | — | 57.0% | 100.0% | 0.360 | 0.0163 | — |" in first
    assert "| SFT | 88.0% | 12.5% | 50.0% | 99.0% | 0.400 | 0.0200 | 61 |" in first
    assert "LoRA" not in first  # a LoRA row without its price is only in the second table
    assert floor == "Entropy floor of the true stories: 0.3524 bits/char."
    assert "| SFT | 1,000 | 100.00% | 8.0 | 88.0% | 61 |" in second
    assert "| LoRA r=1 | 25 | 2.50% | 2.0 | 50.0% | 40 |" in second


def test_replace_between_markers_refuses_a_file_without_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit):
        bench.replace_between_markers(readme, "| table |")
    assert readme.read_text() == "no markers here\n"
    readme.write_text(f"a\n{bench.START}\nold\n{bench.END}\nb\n")
    bench.replace_between_markers(readme, "| new |")
    assert readme.read_text() == f"a\n{bench.START}\n| new |\n{bench.END}\nb\n"


def test_lora_figure_draws_one_point_and_one_bar_per_fine_tuning(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    rows = [
        {"row": "base", "method": "shipped model", "accuracy": 0.0},
        {"row": "sft", "method": "SFT, all weights", "accuracy": 0.8, "trainable": 1000,
         "optimizer_bytes": 8192},
        {"row": "lora", "method": "LoRA r=2, lr 0.003", "accuracy": 0.6, "trainable": 40,
         "optimizer_bytes": 1024},
    ]
    drawn = []
    monkeypatch.setattr(plt.Figure, "savefig", lambda fig, path, **kw: drawn.append(fig))
    bench.lora_figure(rows, tmp_path / "f.png")
    left, right = drawn[0].axes
    points = [tuple(c.get_offsets()[0]) for c in left.collections]
    assert points == [(1000, 80.0), (40, 60.0)]  # the base model has no fine-tuning to show
    assert [t.get_text() for t in left.texts] == ["full", "r=2"]
    assert [b.get_height() for b in right.patches] == [8.0, 1.0]  # KiB
    with pytest.raises(SystemExit, match="no SFT or LoRA rows"):
        bench.lora_figure(rows[:1], tmp_path / "g.png")
