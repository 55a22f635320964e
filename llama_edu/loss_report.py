"""Is my loss normal? A run against the entropy floor, and its curves against a reference band.

The reference band (llama_edu/assets/reference_band.json, made by tools/make_reference_band.py)
holds chapter 09's recommended CPU run trained with several seeds: for the training loss
(mean of each block of 10 steps) and for the validation excess over the floor, the minimum,
median and maximum over the seeds. `compare_with_band` puts a run's history next to it and
returns a verdict with a plain message: inside the band, or outside with the likely causes,
or not comparable because the run's configuration differs from the band's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BAND_FILE = Path(__file__).resolve().parent / "assets" / "reference_band.json"
BAND_KEYS = ("config", "seeds", "train_block", "train_steps", "train_loss", "eval_steps",
             "val_excess_bpc")
# Fields of TrainConfig that change where a run is saved or how fast, not its curves.
IGNORED_FIELDS = frozenset({"seed", "device", "compile", "checkpoint_every", "max_minutes"})
MIN_MARGIN_NATS = 0.03  # the band is widened by at least this much on the training loss
MIN_MARGIN_BPC = 0.01  # and by at least this much on the validation excess


@dataclass(frozen=True)
class Verdict:
    """The outcome of `compare_with_band`: where the run lies, and a message that says why."""

    status: str  # "inside", "above", "below", "not comparable" or "too early"
    message: str
    outside_steps: tuple[int, ...] = ()  # the block ends and evaluations found outside
    differences: tuple[str, ...] = ()  # configuration fields that differ from the band's

    def __str__(self) -> str:
        return self.message


def load_band(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The reference band from path (default: the one shipped with llama_edu), checked."""
    file = Path(path) if path is not None else BAND_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"no reference band at {file}. Reinstall llama_edu, or make one with "
            "`python tools/make_reference_band.py`."
        )
    return check_band(json.loads(file.read_text(encoding="utf-8")))


def check_band(band: Mapping[str, Any]) -> dict[str, Any]:
    """The band itself if it has every field with curves of matching lengths; else ValueError."""
    missing = [k for k in BAND_KEYS if k not in band]
    if missing:
        raise ValueError(
            f"the reference band lacks {', '.join(missing)}; it needs {', '.join(BAND_KEYS)}. "
            "Make it again with tools/make_reference_band.py."
        )
    for curve, steps in (("train_loss", "train_steps"), ("val_excess_bpc", "eval_steps")):
        for edge in ("min", "median", "max"):
            values = band[curve].get(edge) if isinstance(band[curve], Mapping) else None
            if values is None or len(values) != len(band[steps]):
                raise ValueError(
                    f"the band's {curve}.{edge} must have one value per entry of {steps} "
                    f"({len(band[steps])}). Make the band again with tools/make_reference_band.py."
                )
    return dict(band)


def config_differences(config: Any, band: Mapping[str, Any]) -> list[str]:
    """The fields of a run's TrainConfig (or its dict) that differ from the band's, as text."""
    mine = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    theirs = band["config"]
    out = []
    for key in sorted(set(mine) | set(theirs)):
        if key in IGNORED_FIELDS:
            continue
        a, b = mine.get(key, "(missing)"), theirs.get(key, "(missing)")
        if isinstance(a, tuple | list) and isinstance(b, tuple | list):
            a, b = list(a), list(b)
        if a != b:
            out.append(f"{key}: yours {a!r}, the band's {b!r}")
    return out


def block_means(history: Sequence[Mapping[str, Any]], block: int) -> dict[int, float]:
    """Mean training loss of each complete block of steps, keyed by the block's last step."""
    for i, record in enumerate(history):
        if "step" not in record or "train_loss" not in record:
            raise ValueError(
                f"history record {i} has no 'step' or 'train_loss' (it has {sorted(record)}). "
                "Pass the history of train() (result.history), one record per step."
            )
    losses = {int(r["step"]): float(r["train_loss"]) for r in history}
    out = {}
    for end in range(block, max(losses, default=0) + 1, block):
        window = [losses.get(s) for s in range(end - block + 1, end + 1)]
        if None not in window:
            out[end] = statistics.fmean(window)  # type: ignore[arg-type]
    return out


def _margin(lo: float, hi: float, minimum: float) -> float:
    return max(hi - lo, minimum)


def _outside(value: float, lo: float, hi: float, minimum: float) -> int:
    """+1 above the widened band, -1 below it, 0 inside."""
    m = _margin(lo, hi, minimum)
    return 1 if value > hi + m else -1 if value < lo - m else 0


CAUSES_ABOVE = (
    "the learning rate is too high (the loss jumps up or stays flat) or too low (it falls too "
    "slowly), or the warm-up is missing",
    "fewer sequences per batch or shorter sequences than the band's (noisier, slower steps)",
    "another corpus, tokenizer or vocabulary size (other units per token)",
    "a bug in the loss or the data: targets not shifted by exactly one token, a wrong mask, "
    "padding counted as text",
    "another device or precision (float16 without loss scaling, a different dtype)",
)
CAUSES_BELOW = (
    "the model sees the answer: targets equal to the inputs, or a causal mask that lets a "
    "position look ahead",
    "validation stories that are also in the training data",
    "more sequences per batch, longer sequences or more steps than the band's",
    "another corpus, tokenizer or vocabulary size (other units per token)",
)


def _causes(direction: int) -> str:
    causes = CAUSES_ABOVE if direction > 0 else CAUSES_BELOW
    return "Likely causes: " + "; ".join(f"({i}) {c}" for i, c in enumerate(causes, 1)) + "."


def compare_with_band(
    history: Sequence[Mapping[str, Any]],
    band: Mapping[str, Any],
    config: Any | None = None,
    warmup_steps: int | None = None,
) -> Verdict:
    """Where a run's training loss and validation excess lie against the band, in plain words.

    A point counts as outside when it lies beyond the band's min..max widened on each side by
    the band's own width (at least MIN_MARGIN_NATS or MIN_MARGIN_BPC): a new seed falls outside
    min..max of n seeds with probability 2 / (n + 1), but rarely that far. Blocks that end inside
    the warm-up are not judged. The run is outside when its last evaluation or more than a
    fifth of its judged training blocks are outside. config (a TrainConfig or its dict) is
    compared with the band's: if it differs, the band does not apply and nothing is judged.
    """
    check_band(band)
    if config is not None:
        differences = config_differences(config, band)
        if differences:
            return Verdict(
                "not comparable",
                "The band does not apply: your run's configuration differs from the band's in "
                + "; ".join(differences) + ". The band shows chapter 09's recommended CPU run; "
                "compare only runs with the same configuration (the seed may differ).",
                differences=tuple(differences),
            )
    if not history:
        raise ValueError("the history is empty: train at least one step (result.history).")
    warmup = band["config"].get("warmup_steps", 0) if warmup_steps is None else warmup_steps
    mine = block_means(history, int(band["train_block"]))
    train_out: list[tuple[int, int]] = []  # (block end, +1 above / -1 below)
    eval_out: list[int] = []
    judged = 0
    for i, step in enumerate(band["train_steps"]):
        if step not in mine or step <= warmup:
            continue
        judged += 1
        lo, hi = band["train_loss"]["min"][i], band["train_loss"]["max"][i]
        side = _outside(mine[step], lo, hi, MIN_MARGIN_NATS)
        if side:
            train_out.append((step, side))
    evals = {int(r["step"]): r for r in history if "val_loss" in r}
    last_side, last_step, last_text = 0, None, ""
    if evals and not any("val_excess_bpc" in r for r in evals.values()):
        return Verdict(
            "not comparable",
            "The history has validation losses but no val_excess_bpc: the band is measured "
            "against the entropy floor, which only TinyTales runs have (or the run was made by "
            "an older llama_edu). Compare val_bpc with the unigram and bigram baselines instead.",
        )
    for i, step in enumerate(band["eval_steps"]):
        if step in evals and "val_excess_bpc" in evals[step]:
            lo, hi = band["val_excess_bpc"]["min"][i], band["val_excess_bpc"]["max"][i]
            value = float(evals[step]["val_excess_bpc"])
            last_side, last_step = _outside(value, lo, hi, MIN_MARGIN_BPC), step
            last_text = (f"At step {step} your validation is {value:.3f} bits/char above the "
                         f"floor; the band's seeds reach {lo:.3f} to {hi:.3f} "
                         f"(median {band['val_excess_bpc']['median'][i]:.3f}).")
            if last_side:
                eval_out.append(step)
    if not judged and last_step is None:
        return Verdict("too early", "Too early to judge: the run has no complete block after "
                       "the warm-up and no evaluation yet.")
    share = len(train_out) / judged if judged else 0.0
    steps = tuple(sorted({s for s, _ in train_out} | set(eval_out)))
    if last_side == 0 and share <= 0.2:
        return Verdict("inside", "Your run is inside the reference band: its loss is what the "
                       f"recommended run gives with other seeds. {last_text}".strip(), steps)
    direction = last_side or (1 if sum(side for _, side in train_out) >= 0 else -1)
    word = "above" if direction > 0 else "below"
    where = (f"{len(train_out)} of {judged} training blocks after the warm-up"
             + (" and the last evaluation" if last_side else ""))
    if direction < 0 and evals:
        last_excess = float(evals[max(evals)].get("val_excess_bpc", math.inf))
        if last_excess < 0:
            where += (f"; the validation is {-last_excess:.3f} bits/char below the entropy "
                      "floor, which no honest model can be on average")
    return Verdict(word, f"Your run is {word} the reference band ({where}). {last_text} "
                   f"{_causes(direction)}", steps)


def gap_report(record: Mapping[str, Any], baselines: Mapping[str, float] | None = None) -> str:
    """One line on an evaluation record: bits/char, excess over the floor and gap closed.

    The baselines (unigram_bpc, bigram_bpc, floor_bpc) come from the record itself, as
    `train` writes them, unless given.
    """
    if "val_bpc" not in record:
        raise ValueError(f"the record has no 'val_bpc' (it has {sorted(record)}); pass an "
                         "evaluation record of train()'s history.")
    if baselines is None:
        baselines = {k: record[k] for k in ("unigram_bpc", "bigram_bpc", "floor_bpc")
                     if k in record}
    bpc = float(record["val_bpc"])
    if "floor_bpc" in baselines and "bigram_bpc" in baselines:
        floor, bigram = baselines["floor_bpc"], baselines["bigram_bpc"]
        excess = record.get("val_excess_bpc", bpc - floor)
        gap = record.get("gap_closed", (bigram - bpc) / (bigram - floor))
        return (f"val {bpc:.3f} bits/char: {excess:.3f} above the floor {floor:.3f}, "
                f"{gap:.1%} of the gap from the bigram ({bigram:.3f}) to the floor closed")
    if "unigram_bpc" in baselines and "bigram_bpc" in baselines:
        unigram, bigram = baselines["unigram_bpc"], baselines["bigram_bpc"]
        return (f"val {bpc:.3f} bits/char, unigram {unigram:.3f}, bigram {bigram:.3f} "
                "(no entropy floor is known for this corpus)")
    parts = [f"val {bpc:.3f} bits/char"]
    for name in ("unigram", "bigram"):
        if f"{name}_bpc" in baselines:
            parts.append(f"{name} {baselines[f'{name}_bpc']:.3f}")
    return ", ".join(parts) + " (no entropy floor is known for this corpus)"
