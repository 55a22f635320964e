"""The ablation lab: short TinyTales runs that change one design choice of Llama at a time.

Every run uses the same text, tokenizer and training budget, and is reported as its excess bits
per character over the exact entropy floor of the held-out stories (0 would be a perfect model).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data import bigram_bits_per_char
from .model import Llama, ModelArgs
from .tinytales import TinyTales, ratio_estimate
from .tokenizer import SentencePieceTokenizer, train_sentencepiece
from .train import TrainConfig, lr_at, make_optimizer, random_windows, story_bits_per_char

# a model small enough for a dozen runs in a few minutes on 2 cores, big enough to learn TinyTales
LAB_MODEL: dict[str, Any] = {
    "dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "multiple_of": 16,
    "vocab_size": 512, "max_seq_len": 128,
}  # fmt: skip
LAB_TRAIN: dict[str, Any] = {
    "seq_len": 128, "batch_size": 8, "max_lr": 1e-2, "min_lr": 1e-3, "warmup_steps": 30,
}  # fmt: skip


@dataclass(frozen=True)
class Variant:
    """One configuration of the lab: a name, ModelArgs changes and TrainConfig changes."""

    name: str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


BASELINE = Variant("Llama (baseline)")

# each group compares the baseline with the variants that change one choice
ABLATIONS: dict[str, list[Variant]] = {
    "norm position": [
        Variant("post-norm", {"norm_position": "post"}),
        Variant("no norm", {"norm_position": "none"}),
    ],
    "norm type": [Variant("LayerNorm", {"norm_type": "layernorm"})],
    "feed-forward": [
        Variant("ReLU MLP", {"ffn_type": "relu"}),
        Variant("GELU MLP", {"ffn_type": "gelu"}),
    ],
    "positions": [
        Variant("learned absolute", {"pos_encoding": "learned"}),
        Variant("sinusoidal", {"pos_encoding": "sinusoidal"}),
        Variant("no positions", {"pos_encoding": "none"}),
    ],
    "warm-up": [Variant("no warm-up", train={"warmup_steps": 0})],
    "learning rate": [
        Variant("max_lr 3e-3", train={"max_lr": 3e-3, "min_lr": 3e-4}),
        Variant("max_lr 3e-2", train={"max_lr": 3e-2, "min_lr": 3e-3}),
        Variant("max_lr 1e-1", train={"max_lr": 1e-1, "min_lr": 1e-2}),
        Variant("max_lr 3e-1", train={"max_lr": 3e-1, "min_lr": 3e-2}),
    ],
    "key/value heads": [
        Variant("1 kv head (MQA)", {"n_kv_heads": 1}),
        Variant("4 kv heads (MHA)", {"n_kv_heads": 4}),
    ],
    "embeddings": [Variant("tied embeddings", {"tie_embeddings": True})],
}


def all_variants() -> list[Variant]:
    """The baseline followed by every variant of every group."""
    return [BASELINE] + [v for group in ABLATIONS.values() for v in group]


@dataclass
class LabData:
    """The shared text of every lab run, tokenized once, with its exact floor and baseline."""

    tokenizer: SentencePieceTokenizer
    train: torch.Tensor  # token ids of the training stories, each bos ... eos
    val_texts: list[str]
    floor: float  # exact bits per character of val_texts under the generator
    floor_stderr: float
    bigram: float  # a bigram model's bits per character on val_texts (trained on the train text)
    train_chars_per_token: float
    train_floor: float


def lab_data(n_stories: int = 10_000, n_val: int = 300, vocab_size: int = 512, seed: int = 0,
             folder: str | Path | None = None) -> LabData:  # fmt: skip
    """Sample TinyTales stories, train a SentencePiece tokenizer on them and encode them."""
    if n_stories < 100 or n_val < 2:
        raise ValueError(
            f"the lab needs at least 100 training stories and 2 held-out ones, got "
            f"n_stories={n_stories}, n_val={n_val}."
        )
    tales = TinyTales()
    train_stories = tales.sample(n_stories, seed=seed)
    texts = [s.text for s in train_stories]
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="llama_edu_lab_"))
    tokenizer = train_sentencepiece("\n".join(texts), vocab_size, folder)
    # held-out stories that fit one window, so no variant meets a position it never trained on
    fits = [
        s
        for s in tales.sample(2 * n_val, seed=seed + 10**6)
        if len(tokenizer.encode(s.text, bos=True, eos=True)) <= LAB_TRAIN["seq_len"] + 1
    ]
    if len(fits) < n_val:
        raise ValueError(
            f"only {len(fits)} of {2 * n_val} held-out stories fit {LAB_TRAIN['seq_len']} tokens "
            f"with vocab_size={vocab_size}; use a larger vocabulary."
        )
    val_stories = fits[:n_val]
    val_texts = [s.text for s in val_stories]
    ids: list[int] = []
    for text in texts:
        ids += tokenizer.encode(text, bos=True, eos=True)
    floor = ratio_estimate([s.bits for s in val_stories], [s.n_chars for s in val_stories])
    train_floor = ratio_estimate(
        [s.bits for s in train_stories], [s.n_chars for s in train_stories]
    )
    return LabData(
        tokenizer=tokenizer,
        train=torch.tensor(ids, dtype=torch.long),
        val_texts=val_texts,
        floor=floor.bits_per_char,
        floor_stderr=floor.stderr,
        bigram=bigram_bits_per_char(texts, val_texts),
        train_chars_per_token=sum(s.n_chars for s in train_stories) / len(ids),
        train_floor=train_floor.bits_per_char,
    )


@dataclass
class LabResult:
    """One finished lab run."""

    variant: str
    seed: int
    steps: int
    curve_steps: list[int]
    curve_excess: list[float]  # training loss as excess bits/char over the floor, smoothed
    excess: float  # held-out bits/char minus the floor, at the end (inf if it diverged)
    gap_closed: float  # (bigram - model) / (bigram - floor)
    diverged: bool
    n_params: int
    kv_bytes_per_token: int  # fp32 KV cache for one token, all layers
    seconds: float


def lab_args(variant: Variant, vocab_size: int) -> ModelArgs:
    """The ModelArgs of a variant: LAB_MODEL with the variant's changes."""
    return ModelArgs(**{**LAB_MODEL, "vocab_size": vocab_size, **variant.model})


def run_variant(data: LabData, variant: Variant, steps: int = 300, seed: int = 0,
                smooth: int = 25) -> LabResult:  # fmt: skip
    """Train one variant for `steps` steps and measure it on the held-out stories."""
    if steps < smooth:
        raise ValueError(f"steps={steps} must be at least the smoothing window {smooth}.")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(variant.train) - known
    if unknown:
        raise ValueError(f"variant {variant.name!r} sets unknown TrainConfig fields {unknown}.")
    cfg = TrainConfig(**{**LAB_TRAIN, "max_steps": steps, "seed": seed, **variant.train})
    args = lab_args(variant, data.tokenizer.vocab_size)
    torch.manual_seed(seed)
    model = Llama(args)
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(seed)
    to_bits = 1 / (math.log(2) * data.train_chars_per_token)  # nats/token -> bits/char
    losses: list[float] = []
    curve_steps: list[int] = []
    curve: list[float] = []
    diverged = False
    start = time.perf_counter()
    model.train()
    for step in range(steps):
        lr = lr_at(step, cfg.warmup_steps, cfg.max_steps, cfg.max_lr, cfg.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = random_windows(data.train, cfg.batch_size, cfg.seq_len, generator)
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        if not math.isfinite(loss.item()):
            diverged = True
            break
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % smooth == 0:
            curve_steps.append(step + 1)
            curve.append(statistics.fmean(losses[-smooth:]) * to_bits - data.train_floor)
    model.eval()
    bpc = math.inf if diverged else story_bits_per_char(model, data.tokenizer, data.val_texts)
    diverged = diverged or not math.isfinite(bpc)
    return LabResult(
        variant=variant.name,
        seed=seed,
        steps=steps,
        curve_steps=curve_steps,
        curve_excess=curve,
        excess=bpc - data.floor if not diverged else math.inf,
        gap_closed=(data.bigram - bpc) / (data.bigram - data.floor) if not diverged else -math.inf,
        diverged=diverged,
        n_params=model.num_params(),
        kv_bytes_per_token=2 * args.n_layers * args.kv_heads * args.head_dim * 4,
        seconds=time.perf_counter() - start,
    )


def run_lab(data: LabData, variants: Iterable[Variant], steps: int = 300,
            seeds: Sequence[int] = (0,),
            progress: Callable[[LabResult], None] | None = None) -> list[LabResult]:  # fmt: skip
    """Run every variant with every seed; progress (if given) sees each result as it arrives."""
    results = []
    for variant in variants:
        for seed in seeds:
            result = run_variant(data, variant, steps, seed)
            results.append(result)
            if progress is not None:
                progress(result)
    return results


@dataclass(frozen=True)
class LabRow:
    """One variant summarised over its seeds."""

    variant: str
    excess_mean: float
    excess_min: float
    excess_max: float
    n_seeds: int
    gap_closed_mean: float
    n_params: int
    kv_bytes_per_token: int
    diverged: int  # how many seeds diverged

    @property
    def spread(self) -> float:
        """Max minus min over seeds (0 for one seed)."""
        return self.excess_max - self.excess_min


def summarise(results: Sequence[LabResult]) -> list[LabRow]:
    """One row per variant, in the order the variants first appear, with the seed spread."""
    by_name: dict[str, list[LabResult]] = {}
    for r in results:
        by_name.setdefault(r.variant, []).append(r)
    rows = []
    for name, runs in by_name.items():
        excess = [r.excess for r in runs]
        rows.append(
            LabRow(
                variant=name,
                excess_mean=statistics.fmean(excess),
                excess_min=min(excess),
                excess_max=max(excess),
                n_seeds=len(runs),
                gap_closed_mean=statistics.fmean(r.gap_closed for r in runs),
                n_params=runs[0].n_params,
                kv_bytes_per_token=runs[0].kv_bytes_per_token,
                diverged=sum(r.diverged for r in runs),
            )
        )
    return rows


def verdict(row: LabRow, baseline: LabRow) -> str:
    """Better, worse or 'within noise': a mean difference no larger than either seed spread."""
    if row.diverged:
        return f"diverged ({row.diverged} of {row.n_seeds} seeds)"
    diff = row.excess_mean - baseline.excess_mean
    if abs(diff) <= max(row.spread, baseline.spread):
        return f"within noise ({diff:+.3f})"
    return f"{'worse' if diff > 0 else 'better'} by {abs(diff):.3f}"


def markdown_table(rows: Sequence[LabRow], baseline: str = BASELINE.name) -> str:
    """The lab's table in Markdown: excess bits/char (mean, min..max over seeds) and verdicts."""
    base = next((r for r in rows if r.variant == baseline), None)
    if base is None:
        raise ValueError(f"the rows hold no {baseline!r}; run the baseline too.")
    lines = [
        "| variant | excess bits/char (mean) | min .. max over seeds | seeds | gap closed | "
        "parameters | KV cache bytes/token (fp32) | against the baseline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mean = "diverged" if r.diverged == r.n_seeds else f"{r.excess_mean:.3f}"
        one = r.diverged or r.n_seeds == 1
        spread = "—" if one else f"{r.excess_min:.3f} .. {r.excess_max:.3f}"
        against = "—" if r is base else verdict(r, base)
        gap = "" if r.diverged else f"{r.gap_closed_mean:.1%}"
        lines.append(
            f"| {r.variant} | {mean} | {spread} | {r.n_seeds} | {gap} | {r.n_params:,} | "
            f"{r.kv_bytes_per_token:,} | {against} |"
        )
    return "\n".join(lines)
