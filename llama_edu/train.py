"""Training a small Llama: batches, AdamW, a warm-up + cosine schedule, safe checkpoints, torchrun.

One entry point, `train(cfg, out_dir)`, runs on one process or under
`torchrun --nproc_per_node=N` (DistributedDataParallel; nccl on CUDA, gloo on CPU).
Checkpoints hold only tensors (safetensors) and JSON, so loading never unpickles anything, and
every write goes to a temporary folder first and is renamed into place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .data import load_corpus, train_val_split
from .device import get_device
from .model import Llama, ModelArgs
from .runfiles import (
    LEGACY_RUN_FORMAT,
    RUN_FORMAT,
    RunFolderError,
    atomic_write_text,
    foreign_entries,
    fsync_dir,
    fsync_tree,
    install_folder,
    make_staging_dir,
)
from .storyworld import StoryWorld
from .tinytales import TinyTales
from .tinytales_zh import TinyTalesZh
from .tokenizer import SentencePieceTokenizer, train_sentencepiece

FORMAT_VERSION = LEGACY_RUN_FORMAT  # runs written before the marker; new runs carry RUN_FORMAT
CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors", "state.json")
MODEL_FILES = ("model.safetensors", "state.json")  # enough to load the weights (load_run)
RUN_FILES = ("config.json", "tokenizer.model", "tokenizer.vocab")
RUN_SUBFOLDERS = {"checkpoint": CHECKPOINT_FILES, ".checkpoint.old": CHECKPOINT_FILES}
RUN_LEFTOVERS = (".checkpoint.", ".tokenizer.training-")  # staging folders a crash can leave


@dataclass
class TrainConfig:
    """Everything that decides a training run (saved with every checkpoint)."""

    corpus: str = "tiny-tales"
    preset: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    vocab_size: int = 512
    n_stories: int = 20000  # TinyTales stories for training (the validation stories are extra)
    seq_len: int = 128
    batch_size: int = 32  # sequences per optimiser step, summed over processes
    grad_accum: int = 1
    max_steps: int = 600
    max_minutes: float | None = None  # a safety stop; the schedule still follows max_steps
    max_lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 30
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 8
    checkpoint_every: int = 200
    seed: int = 0
    device: str | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # JSON gives a list back
        if self.batch_size < 1 or self.grad_accum < 1 or self.max_steps < 1 or self.seq_len < 2:
            raise ValueError("batch_size, grad_accum, max_steps must be >= 1 and seq_len >= 2.")
        if not 0 <= self.min_lr <= self.max_lr:
            raise ValueError(f"need 0 <= min_lr <= max_lr, got {self.min_lr} and {self.max_lr}.")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(
                f"max_minutes must be a positive number of minutes, got {self.max_minutes}. "
                "Give a value above 0, or None for no time limit."
            )

    def model_args(self) -> ModelArgs:
        """The model this run trains: the preset, with the run's vocabulary and overrides."""
        overrides = {"vocab_size": self.vocab_size, **self.model_overrides}
        return ModelArgs.from_name(self.preset, **overrides)


def recommended_config(device_type: str) -> TrainConfig:
    """The TinyTales run the workbook recommends: about 3 minutes on a 2-core CPU, more on a GPU."""
    if device_type == "cuda":
        return TrainConfig(
            model_overrides={"dim": 256, "n_layers": 6, "n_heads": 8, "n_kv_heads": 4,
                             "multiple_of": 64},
            n_stories=100_000, seq_len=256, batch_size=64, max_steps=2000, warmup_steps=100,
            max_lr=2e-3, min_lr=2e-4, eval_every=200, checkpoint_every=500,
        )  # fmt: skip
    return TrainConfig(max_steps=600, eval_every=100)


# --- the pieces that the notebook builds by hand -------------------------------------------


def lr_at(step: int, warmup_steps: int, max_steps: int, max_lr: float, min_lr: float) -> float:
    """Linear warm-up from 0 to max_lr, cosine decay to min_lr at max_steps, min_lr after."""
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))


def adamw_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    step: int,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One AdamW update (step counts from 1); returns new (param, m, v) without changing inputs."""
    beta1, beta2 = betas
    param = param * (1 - lr * weight_decay)  # decoupled weight decay
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    m_hat = m / (1 - beta1**step)
    v_hat = v / (1 - beta2**step)
    return param - lr * m_hat / (v_hat.sqrt() + eps), m, v


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float,
    grad_clip: float,
) -> float:
    """One optimiser step on inputs x and targets y (batch, seq); returns the loss before it.

    Sets lr in every param group, computes the mean cross-entropy of model(x) against y,
    back-propagates, clips the gradient norm to grad_clip, steps and zeroes the gradients.
    `train` runs the same step with gradient accumulation, autocast and DDP around it.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    logits = model(x)  # (batch, seq, vocab)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def random_windows(
    tokens: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets, each (batch_size, seq_len), from random places in tokens."""
    if tokens.numel() < seq_len + 2:
        raise ValueError(
            f"the corpus has {tokens.numel()} tokens, too few for windows of seq_len={seq_len}. "
            "Use more text or a smaller seq_len."
        )
    starts = torch.randint(0, tokens.numel() - seq_len - 1, (batch_size,), generator=generator)
    rows = torch.stack([tokens[s : s + seq_len + 1] for s in starts.tolist()])
    return rows[:, :-1], rows[:, 1:]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only (not on norms or embeddings)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.dim() < 2 or "embeddings" in name or "norm" in name
        (no_decay if skip else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.max_lr, betas=cfg.betas, foreach=False)


# --- data ----------------------------------------------------------------------------------


@dataclass
class Corpus:
    """Token streams for training and validation, and what is needed to report bits/char.

    baselines holds, in bits per character of the validation documents (each counted with one
    newline, as val_chars counts them): "unigram_bpc" and "bigram_bpc" (character models fit
    on the training documents) and, for a story world's corpus only (tiny-tales, tiny-tales-zh),
    "floor_bpc", the exact entropy of the validation stories under the generator,
    sum(-log2 p(story)) / val_chars.
    """

    train: torch.Tensor
    val: torch.Tensor
    val_chars: int
    tokenizer: SentencePieceTokenizer
    val_texts: list[str] = field(default_factory=list)
    baselines: dict[str, float] = field(default_factory=dict)


def baselines_bpc(
    train_texts: list[str], val_texts: list[str], val_bits: float | None = None
) -> dict[str, float]:
    """Unigram and bigram bits/char on val_texts, and the floor val_bits / chars if given."""
    from .data import bigram_bits_per_char, unigram_bits_per_char

    out = {
        "unigram_bpc": unigram_bits_per_char(train_texts, val_texts),
        "bigram_bpc": bigram_bits_per_char(train_texts, val_texts),
    }
    if val_bits is not None:
        out["floor_bpc"] = val_bits / sum(len(t) + 1 for t in val_texts)
    return out


STORY_WORLDS: dict[str, type[StoryWorld]] = {"tiny-tales": TinyTales, "tiny-tales-zh": TinyTalesZh}
"""The corpora written by a story world, whose exact entropy floor a run can report."""
TINY_TALES_ZH_VOCAB_SIZE = 1024
"""A vocabulary for tiny-tales-zh: its ~300 characters, 259 fixed ids and ~460 merges."""


def prepare_corpus(cfg: TrainConfig, out_dir: Path) -> Corpus:
    """Make (or reuse) the run's tokenizer, encode train and validation text, and its baselines."""
    val_bits = None
    options: dict[str, Any] = {}  # for train_sentencepiece; the English corpora use its defaults
    if cfg.corpus in STORY_WORLDS:
        tales = STORY_WORLDS[cfg.corpus]()
        train_texts = [s.text for s in tales.sample(cfg.n_stories, seed=cfg.seed)]
        val_stories = tales.sample(max(200, cfg.n_stories // 20), seed=cfg.seed + 10**6)
        val_texts = [s.text for s in val_stories]
        # Story.bits includes the generator's choice to end the story, which the newline
        # (eos in the token stream) stands for, and Story.n_chars counts that newline.
        val_bits = sum(s.bits for s in val_stories)
    else:
        train_text, val_text = train_val_split(load_corpus(cfg.corpus), 0.1, seed=cfg.seed)
        train_texts, val_texts = train_text.split("\n"), val_text.split("\n")
    model_file = out_dir / "tokenizer.model"
    if cfg.corpus == "tiny-tales-zh":
        # Every character gets a piece of its own (none is left to byte fallback), so the
        # vocabulary must hold the special tokens, the 256 byte pieces, "▁" and each character.
        options["character_coverage"] = 1.0
        n_chars = len(set("".join(train_texts)))
        need = 256 + 3 + 1 + n_chars
        if cfg.vocab_size < need:
            raise ValueError(
                f"tiny-tales-zh writes {n_chars} different characters, each a token of its own, so "
                f"vocab_size must be at least {need}, not {cfg.vocab_size}; use "
                f"vocab_size={TINY_TALES_ZH_VOCAB_SIZE} (llama-edu train --vocab-size "
                f"{TINY_TALES_ZH_VOCAB_SIZE}, the default there for this corpus)."
            )
    if model_file.exists():
        tokenizer = SentencePieceTokenizer(model_file)
    else:
        tokenizer = train_sentencepiece("\n".join(train_texts), cfg.vocab_size, out_dir,
                                        **options)
    if tokenizer.vocab_size != cfg.vocab_size:
        raise ValueError(
            f"{model_file} has {tokenizer.vocab_size} tokens but the run asks for {cfg.vocab_size}."
        )

    def stream(texts: list[str]) -> torch.Tensor:
        ids: list[int] = []
        for text in texts:
            ids += tokenizer.encode(text, bos=True, eos=True)
        return torch.tensor(ids, dtype=torch.long)

    # each document ends with a newline in the character count: eos stands for it
    val_chars = sum(len(t) + 1 for t in val_texts)
    baselines = baselines_bpc(train_texts, val_texts, val_bits)
    return Corpus(stream(train_texts), stream(val_texts), val_chars, tokenizer, val_texts,
                  baselines)


# --- checkpoints ---------------------------------------------------------------------------


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupted, or belongs to another configuration."""


def _complete(folder: Path, files: tuple[str, ...]) -> bool:
    return all((folder / name).is_file() for name in files)


def latest_checkpoint(out_dir: Path, files: tuple[str, ...] = CHECKPOINT_FILES) -> Path | None:
    """The newest complete checkpoint folder of a run: checkpoint/, else .checkpoint.old/."""
    # save_checkpoint renames checkpoint/ to .checkpoint.old/ and only then the new one into
    # place, so a complete checkpoint/ is always the newer of the two.
    for name in ("checkpoint", ".checkpoint.old"):
        if _complete(Path(out_dir) / name, files):
            return Path(out_dir) / name
    return None

def write_optimizer_state(
    folder: Path, optimizer: torch.optim.Optimizer, generator: torch.Generator, state: dict
) -> None:
    """Write optimizer.safetensors (moments, RNG state) and state.json (state + param groups)."""
    opt = optimizer.state_dict()
    tensors = {"generator_state": generator.get_state()}
    for index, values in opt["state"].items():
        for key, value in values.items():
            tensors[f"state.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    save_file(tensors, folder / "optimizer.safetensors")
    (folder / "state.json").write_text(
        json.dumps({**state, "param_groups": opt["param_groups"]}, indent=1) + "\n"
    )


def save_checkpoint(
    out_dir: Path,
    model: Llama,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    generator: torch.Generator,
) -> Path:
    """Write weights, optimiser state and training state; replace the old checkpoint atomically."""
    target = out_dir / "checkpoint"
    old = out_dir / ".checkpoint.old"
    staging = make_staging_dir(out_dir, "checkpoint")
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        if model.args.tie_embeddings:
            weights.pop("output.weight")
        save_file(weights, staging / "model.safetensors")
        write_optimizer_state(staging, optimizer, generator, state)
        fsync_tree(staging)  # on disk before any rename: a crash cannot leave a hollow checkpoint
        if _complete(target, CHECKPOINT_FILES):
            shutil.rmtree(old, ignore_errors=True)  # checkpoint/ is complete: the older is spare
            os.replace(target, old)
        elif target.exists():
            shutil.rmtree(target)  # an incomplete checkpoint/ cannot be loaded; .old stays
        os.replace(staging, target)
        fsync_dir(out_dir)
        shutil.rmtree(old, ignore_errors=True)  # only now that the new checkpoint is in place
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def load_checkpoint(
    out_dir: Path,
    model: Llama,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Load the newest complete checkpoint into model (and optimizer, generator); return state."""
    needed = CHECKPOINT_FILES if optimizer or generator else MODEL_FILES
    folder = latest_checkpoint(out_dir, needed) or out_dir / "checkpoint"
    try:
        weights = load_file(folder / "model.safetensors")
        state = json.loads((folder / "state.json").read_text())
        extra = load_file(folder / "optimizer.safetensors") if optimizer or generator else {}
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"no complete checkpoint in {out_dir}: {exc.filename} is missing."
        ) from exc
    except Exception as exc:  # safetensors raises its own errors for truncated files
        raise CheckpointError(
            f"the checkpoint in {folder} is corrupted or truncated ({type(exc).__name__}: {exc}). "
            "Nothing was changed; train again or restore the folder from a copy."
        ) from exc
    from .interop import validate_state_dict

    validate_state_dict(weights, model.args)
    model.load_state_dict(weights, strict=not model.args.tie_embeddings)
    if optimizer is not None:
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in extra.items():
            if key.startswith("state."):
                _, index, name = key.split(".", 2)
                opt_state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    if generator is not None:
        generator.set_state(extra["generator_state"])
    return state


# --- run folders ---------------------------------------------------------------------------


def read_run_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The config.json of a run folder, checked: valid JSON, a run's keys, known fields only."""
    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder} has no config.json; is it a run folder made by train()?")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(
            f"{config_file} is not valid JSON ({exc}), so it is not a run made by train(). "
            "Restore it from a copy, or train the run again into a new folder."
        ) from exc
    if not isinstance(config, dict):
        raise RunFolderError(
            f"{config_file} holds a JSON {type(config).__name__}, but a run's config.json is an "
            "object with 'format', 'model' and 'train'. Point to a folder made by train()."
        )
    fmt = config.get("format")
    if fmt not in (RUN_FORMAT, LEGACY_RUN_FORMAT, None):
        raise RunFolderError(
            f"{config_file} has format {fmt!r}; this llama_edu reads {RUN_FORMAT!r} (and the older "
            f"{LEGACY_RUN_FORMAT}). It may come from a newer llama_edu: update, or use another run."
        )
    problems = [f"unknown key {k!r}" for k in sorted(set(config) - {"format", "model", "train"})]
    if not isinstance(config.get("model"), dict):
        problems.append("no 'model' object")
    else:
        known = {f.name for f in dataclasses.fields(ModelArgs)}
        problems += [f"unknown key 'model.{k}'" for k in sorted(set(config["model"]) - known)]
    if "train" in config:
        if not isinstance(config["train"], dict):
            problems.append("'train' is not an object")
        else:
            known = {f.name for f in dataclasses.fields(TrainConfig)}
            problems += [f"unknown key 'train.{k}'" for k in sorted(set(config["train"]) - known)]
    if problems:
        raise RunFolderError(
            f"{config_file} is not a llama_edu run config: {'; '.join(problems)}. A run's "
            "config.json holds 'format', 'model' (ModelArgs fields) and 'train' (TrainConfig "
            "fields). Point to a folder made by train(), or restore the file from a copy."
        )
    return config


def _inspect_run_dir(run_dir: Path) -> tuple[str, str]:
    """('missing' | 'empty' | 'run' | 'foreign', why) for a folder that train() is to use."""
    if not run_dir.exists():
        return "missing", ""
    if not run_dir.is_dir():
        raise NotADirectoryError(
            f"{run_dir} is a file, not a folder. Give a folder for the run (new, empty, or one "
            "made by train())."
        )
    if not any(run_dir.iterdir()):
        return "empty", ""
    if not (run_dir / "config.json").is_file():
        return "foreign", "it has no config.json"
    try:
        config = read_run_config(run_dir)
    except RunFolderError as exc:
        return "foreign", str(exc)
    if config.get("format") is None or "train" not in config:
        return "foreign", "its config.json carries no run format marker"
    return "run", ""


def _config_text(cfg: TrainConfig) -> str:
    config = {"format": RUN_FORMAT, "model": cfg.model_args().to_dict(),
              "train": _json(dataclasses.asdict(cfg))}
    return json.dumps(config, indent=1) + "\n"


def _new_run(run_dir: Path, cfg: TrainConfig, overwrite: bool) -> Corpus:
    """Prepare a new run in a staging folder; replace an old run only once that is ready."""
    kind, why = _inspect_run_dir(run_dir)
    if kind == "foreign":
        raise FileExistsError(
            f"{run_dir} is not empty and holds no training run ({why}). Nothing was changed. "
            "Choose a new or empty folder: overwrite=True (--overwrite) replaces only run folders "
            "made by train()."
        )
    if kind == "run":
        if not overwrite:
            raise FileExistsError(
                f"{run_dir} already holds a training run. Pass resume=True (--resume) to continue "
                "it, overwrite=True (--overwrite) to replace it, or choose another folder."
            )
        extra = foreign_entries(run_dir, RUN_FILES, RUN_LEFTOVERS, RUN_SUBFOLDERS)
        if extra:
            raise FileExistsError(
                f"{run_dir} holds a training run and also {', '.join(extra)}, which train() did "
                "not write. Nothing was changed. Move those away, or choose another folder."
            )
    staging = make_staging_dir(run_dir.parent, run_dir.name)
    try:
        corpus = prepare_corpus(cfg, staging)  # a bad corpus fails here, before the old run
        atomic_write_text(staging / "config.json", _config_text(cfg))
        install_folder(staging, run_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    corpus.tokenizer = SentencePieceTokenizer(run_dir / "tokenizer.model")
    return corpus


def _check_resumable(run_dir: Path, cfg: TrainConfig) -> Path:
    """Check that run_dir holds this run with a checkpoint; return the checkpoint to resume."""
    kind, why = _inspect_run_dir(run_dir)
    if kind in ("missing", "empty"):
        raise FileNotFoundError(
            f"{run_dir} holds no training run to resume. To start a new run there, leave out "
            "resume=True (--resume)."
        )
    if kind == "foreign":
        raise RunFolderError(
            f"cannot resume: {run_dir} is not a training run made by train() ({why}). "
            "Nothing was changed. Give the folder of a run, or start a new run in a new folder."
        )
    saved = read_run_config(run_dir)
    mine = _json({"model": cfg.model_args().to_dict(), "train": dataclasses.asdict(cfg)})
    differing = [
        f"{part}.{key}: saved {saved[part].get(key)!r}, now {value!r}"
        for part in ("model", "train")
        for key, value in mine[part].items()
        if saved[part].get(key) != value and key not in ("max_steps", "max_minutes", "device")
    ]
    if differing:
        raise ValueError(
            "cannot resume: the configuration differs from the saved run in "
            + "; ".join(differing)
            + ". Use the saved configuration, or start a new run."
        )
    found = latest_checkpoint(run_dir)
    if found is None and (run_dir / "checkpoint").exists():
        found = run_dir / "checkpoint"  # incomplete: load_checkpoint names what is missing
    if found is None:
        raise CheckpointError(
            f"{run_dir} holds a training run but no checkpoint to resume from (it stopped before "
            "its first save). Start it again with overwrite=True (--overwrite), or train into a "
            "new folder."
        )
    if not (run_dir / "tokenizer.model").is_file():
        raise CheckpointError(
            f"{run_dir / 'tokenizer.model'} is missing, and the checkpoint only fits that "
            "tokenizer. Restore it from a copy, or start a new run."
        )
    return found


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


# --- interrupts ----------------------------------------------------------------------------


class _DeferInterrupt:
    """Hold back Ctrl-C (SIGINT) until the block ends; a second Ctrl-C is delivered at once.

    Installed only in the main thread and only over a Python-level handler; the previous
    handler is put back on exit and, if a Ctrl-C came in, called then (between steps).
    """

    def __enter__(self) -> _DeferInterrupt:
        self.pending = False
        self.previous: Any = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if callable(previous):
                self.previous = previous
                signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.pending:  # the second Ctrl-C: stop now; train() undoes the step in flight
            self.previous(signum, frame)
        self.pending = True

    def __exit__(self, *exc_info: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            if self.pending and exc_info[0] is None:
                self.previous(signal.SIGINT, None)  # normally raises KeyboardInterrupt


class _StepUndo:
    """Copies of the weights and the optimiser state from just before an optimiser step."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.weights: list[torch.Tensor] = []
        self.state: dict[torch.Tensor, dict[str, Any]] = {}

    def save(self) -> None:
        """Copy the weights and the optimiser state (into buffers kept between steps)."""
        with torch.no_grad():
            if not self.weights:
                self.weights = [torch.empty_like(p) for p in self.params]
            for copy, p in zip(self.weights, self.params, strict=True):
                copy.copy_(p)
            state = {}
            for p in self.params:
                if p not in self.optimizer.state:
                    continue
                kept = self.state.get(p, {})
                state[p] = {}
                for key, value in self.optimizer.state[p].items():
                    if not isinstance(value, torch.Tensor):
                        state[p][key] = value
                    elif key in kept and kept[key].shape == value.shape:
                        state[p][key] = kept[key].copy_(value)
                    else:
                        state[p][key] = value.clone()
            self.state = state

    def restore(self) -> None:
        """Put back what save() copied, exactly."""
        with torch.no_grad():
            for copy, p in zip(self.weights, self.params, strict=True):
                p.copy_(copy)
            for p in self.params:
                if p in self.state:
                    self.optimizer.state[p] = {
                        k: v.clone() if isinstance(v, torch.Tensor) else v
                        for k, v in self.state[p].items()
                    }
                else:
                    self.optimizer.state.pop(p, None)


# --- training ------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a run produced."""

    model: Llama
    tokenizer: SentencePieceTokenizer
    history: list[dict[str, float]]
    step: int
    stopped: str  # "finished", "interrupted", "time limit" or "non-finite loss"
    out_dir: Path | None
    baselines: dict[str, float] = field(default_factory=dict)  # Corpus.baselines of the run


def _require_compiler(device: torch.device) -> None:
    """torch.compile on the CPU writes C++: without a compiler, say so before anything starts."""
    if device.type == "cpu" and not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
        raise RuntimeError(
            "compile=True on the CPU needs a C++ compiler (c++, g++ or clang++) on the PATH and "
            "none was found. Install one (e.g. apt install g++, or Xcode's command line tools), "
            "or train without --compile: it changes only the speed, and on a CPU it pays off "
            "only in runs longer than a few minutes."
        )


def evaluate(
    model: Llama, corpus: Corpus, cfg: TrainConfig, device: torch.device
) -> dict[str, float]:
    """Validation loss (nats/token) on fixed windows, the same in bits/char, and the baselines.

    The record holds val_loss, val_bpc and corpus.baselines (unigram_bpc, bigram_bpc and on
    TinyTales floor_bpc), measured on the same validation documents and characters (each with
    its newline) as val_bpc. With a floor it also holds val_excess_bpc = val_bpc - floor_bpc
    and gap_closed = (bigram_bpc - val_bpc) / (bigram_bpc - floor_bpc): 1 at the floor, 0 at
    the character bigram model.
    """
    windows = corpus.val[: (corpus.val.numel() - 1) // cfg.seq_len * cfg.seq_len + 1]
    n = min(cfg.eval_batches * cfg.batch_size, (windows.numel() - 1) // cfg.seq_len)
    if n < 1:
        raise ValueError(f"the validation text is shorter than one window of {cfg.seq_len} tokens.")
    x = windows[: n * cfg.seq_len].view(n, cfg.seq_len)  # (windows, seq_len)
    y = windows[1 : n * cfg.seq_len + 1].view(n, cfg.seq_len)
    total = 0.0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, n, cfg.batch_size):
            logits = model(x[i : i + cfg.batch_size].to(device))
            target = y[i : i + cfg.batch_size].to(device)
            total += F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum").item()
    model.train(was_training)
    loss = total / (n * cfg.seq_len)
    chars_per_token = corpus.val_chars / corpus.val.numel()
    record = {"val_loss": loss, "val_bpc": loss / math.log(2) / chars_per_token}
    return record | corpus.baselines | excess_over_floor(record["val_bpc"], corpus.baselines)


def excess_over_floor(val_bpc: float, baselines: dict[str, float]) -> dict[str, float]:
    """val_excess_bpc and gap_closed of a validation bits/char, or {} without a floor."""
    if "floor_bpc" not in baselines:
        return {}
    floor, bigram = baselines["floor_bpc"], baselines["bigram_bpc"]
    return {"val_excess_bpc": val_bpc - floor, "gap_closed": (bigram - val_bpc) / (bigram - floor)}


def _distributed() -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[[dict[str, float]], None] | None = None,
    progress: bool = True,
    callback_every: int | None = None,
) -> TrainResult:
    """Train a Llama on cfg.corpus, checkpointing into out_dir; Ctrl-C saves and stops cleanly.

    callback receives the record of every evaluation (it has "val_loss"; on TinyTales also
    "val_excess_bpc" and "gap_closed", see `evaluate`), and with callback_every=n also the record
    of every n-th step (n=1: every step), for a live plot.

    A new run is prepared in a staging folder next to out_dir (corpus read, tokenizer trained,
    config written) before anything in out_dir is touched; overwrite=True replaces only a run
    folder made by train() that holds nothing else. resume=True continues from the newest
    complete checkpoint. Ctrl-C is honoured between optimiser steps only (a second Ctrl-C
    stops at once and the step in flight is undone), so a resumed run equals an uninterrupted one.
    """
    if resume and overwrite:
        raise ValueError(
            "resume=True and overwrite=True contradict each other: pass resume (--resume) to "
            "continue the run in the folder, or overwrite (--overwrite) to start it anew."
        )
    if callback_every is not None and (isinstance(callback_every, bool) or callback_every < 1):
        raise ValueError(
            f"callback_every must be a whole number of steps >= 1, or None, got {callback_every!r}."
        )
    rank, world = _distributed()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the {world} processes.")
    device = get_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if cfg.compile:
        _require_compiler(device)  # before the run folder is made
    run_dir = (
        Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="llama_edu_run_"))
    )
    corpus: Corpus | None = None
    if rank == 0:
        if resume:
            found = _check_resumable(run_dir, cfg)
            if found.name != "checkpoint":
                print(
                    f"resuming from {found}: the newest complete checkpoint (the last save "
                    "stopped between its two renames)."
                )
            corpus = prepare_corpus(cfg, run_dir)
        else:
            corpus = _new_run(run_dir, cfg, overwrite)
    if world > 1:
        dist.barrier()
        corpus = corpus or prepare_corpus(cfg, run_dir)
    assert corpus is not None

    torch.manual_seed(cfg.seed)
    args = cfg.model_args()
    model = Llama(args).to(device)
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    state: dict[str, Any] = {"step": 0, "tokens": 0, "history": []}
    if resume:
        state = load_checkpoint(run_dir, model, optimizer, generator)
        state.pop("param_groups", None)
    model.train()
    ddp_model: torch.nn.Module = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile and device.type in ("cuda", "cpu"):
        ddp_model = torch.compile(ddp_model)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    per_rank = cfg.batch_size // world
    step, stopped = state["step"], "finished"
    start = time.perf_counter()
    last_good = dict(state)
    undo = _StepUndo(optimizer)
    updating = False  # True from just before optimizer.step() until the step is counted
    step_started, data_state = step, generator.get_state()
    tokens_before, history_before = state["tokens"], len(state["history"])
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_steps, initial=step, desc="training", unit="step")

    def checkpoint() -> None:
        if rank == 0:
            save_checkpoint(run_dir, model, optimizer, {**state, "step": step}, generator)

    try:
        while step < cfg.max_steps:
            with _DeferInterrupt():  # Ctrl-C waits for the end of the step
                step_started, data_state = step, generator.get_state()
                tokens_before, history_before = state["tokens"], len(state["history"])
                lr = lr_at(step, cfg.warmup_steps, cfg.max_steps, cfg.max_lr, cfg.min_lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                t0 = time.perf_counter()
                loss_sum = torch.zeros((), device=device)
                for micro in range(cfg.grad_accum):
                    x, y = random_windows(corpus.train, cfg.batch_size, cfg.seq_len, generator)
                    x = x[rank * per_rank : (rank + 1) * per_rank].to(device)  # this rank's rows
                    y = y[rank * per_rank : (rank + 1) * per_rank].to(device)
                    sync = micro == cfg.grad_accum - 1 or world == 1
                    with autocast, contextlib.nullcontext() if sync else ddp_model.no_sync():
                        logits = ddp_model(x)
                        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
                        (loss / cfg.grad_accum).backward()
                    loss_sum += loss.detach() / cfg.grad_accum
                if world > 1:
                    dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
                train_loss = loss_sum.item()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item()
                if not (math.isfinite(train_loss) and math.isfinite(grad_norm)):
                    stopped = "non-finite loss"
                    optimizer.zero_grad(set_to_none=True)
                    if rank == 0:
                        print(
                            f"training stopped at step {step}: the loss is {train_loss} and the "
                            f"gradient norm {grad_norm}. The last good checkpoint is kept; try a "
                            "smaller max_lr."
                        )
                    break
                undo.save()
                updating = True
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                tokens_per_s = (
                    cfg.batch_size * cfg.grad_accum * cfg.seq_len / (time.perf_counter() - t0)
                )
                record = {
                    "step": step + 1,
                    "lr": lr,
                    "train_loss": train_loss,
                    "grad_norm": grad_norm,
                    "tokens_per_s": tokens_per_s,
                }
                evaluated = (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.max_steps
                if evaluated and rank == 0:
                    record.update(evaluate(model, corpus, cfg, device))
                # the step counts from here on: an interrupt after this line keeps it
                state["tokens"] += cfg.batch_size * cfg.grad_accum * cfg.seq_len
                state["history"].append(record)
                step += 1
                updating = False
                wanted = evaluated or (callback_every is not None and step % callback_every == 0)
                if wanted and callback is not None and rank == 0:
                    callback(record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")
                if step % cfg.checkpoint_every == 0:
                    state["step"] = step
                    checkpoint()
                    last_good = dict(state)
                if (
                    cfg.max_minutes is not None
                    and time.perf_counter() - start > 60 * cfg.max_minutes
                ):
                    stopped = "time limit"
                    break
    except KeyboardInterrupt:
        stopped = "interrupted"
        if step == step_started:  # stopped inside a step: undo all of it, resuming repeats it
            if updating:
                undo.restore()
            generator.set_state(data_state)
            optimizer.zero_grad(set_to_none=True)
            state["tokens"] = tokens_before
            del state["history"][history_before:]
            model.train()
        if rank == 0:
            print(f"interrupted at step {step}; saving a checkpoint so you can resume.")
    finally:
        if bar is not None:
            bar.close()
    state["step"] = step
    if stopped != "non-finite loss":
        checkpoint()
    else:
        state = last_good
    if world > 1:
        dist.barrier()
    model.eval()
    return TrainResult(model, corpus.tokenizer, state["history"], step, stopped, run_dir,
                       corpus.baselines)


def load_run(out_dir: str | os.PathLike) -> tuple[Llama, SentencePieceTokenizer]:
    """The trained model and tokenizer of a run folder (or of the shipped checkpoint)."""
    folder = Path(out_dir)
    config = read_run_config(folder)
    try:
        args = ModelArgs(**config["model"])
    except (TypeError, ValueError) as exc:
        raise RunFolderError(
            f"{folder / 'config.json'} describes no valid model ({exc}). Restore the file from a "
            "copy, or train the run again."
        ) from exc
    model = Llama(args)
    load_checkpoint(folder, model)
    if not (folder / "tokenizer.model").is_file():
        raise FileNotFoundError(
            f"{folder / 'tokenizer.model'} is missing; the run's model only fits its own "
            "tokenizer. Restore it from a copy, or train the run again."
        )
    return model.eval(), SentencePieceTokenizer(folder / "tokenizer.model")


PRETRAINED_DIR = Path(__file__).resolve().parent / "assets" / "tinytales"


def load_pretrained() -> tuple[Llama, SentencePieceTokenizer]:
    """The small TinyTales model shipped with the workbook (made by tools/make_pretrained.py)."""
    if not (PRETRAINED_DIR / "checkpoint" / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the shipped TinyTales checkpoint is missing from {PRETRAINED_DIR}. Reinstall "
            "llama_edu, or train your own with notebook 09 and load it with load_run(folder)."
        )
    return load_run(PRETRAINED_DIR)


@dataclass
class TalesReport:
    """How close a model comes to the best possible loss on TinyTales (all in bits per char)."""

    unigram: float
    bigram: float
    floor: float
    floor_stderr: float
    model: float
    gap_closed: float  # (bigram - model) / (bigram - floor)
    valid_fraction: float
    n_samples: int


def story_bits_per_char(
    model: Llama, tokenizer: SentencePieceTokenizer, texts: list[str], batch_size: int = 64
) -> float:
    """The model's bits per character on whole stories (bos + story + eos; eos is the newline)."""
    device = next(model.parameters()).device
    total_bits, total_chars = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            rows = [tokenizer.encode(t, bos=True, eos=True) for t in texts[i : i + batch_size]]
            width = max(len(r) for r in rows)
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            mask = torch.zeros(len(rows), width - 1, dtype=torch.bool)
            for j, row in enumerate(rows):
                ids[j, : len(row)] = torch.tensor(row)
                mask[j, : len(row) - 1] = True
            logits = model(ids[:, :-1].to(device))  # padding sits after each story: never seen
            nll = F.cross_entropy(
                logits.flatten(0, 1), ids[:, 1:].flatten().to(device), reduction="none"
            ).view_as(mask)
            total_bits += nll[mask.to(device)].sum().item() / math.log(2)
            total_chars += sum(len(t) + 1 for t in texts[i : i + batch_size])
    model.train(was_training)
    return total_bits / total_chars


def tales_report(
    model: Llama,
    tokenizer: SentencePieceTokenizer,
    n_eval: int = 1000,
    n_samples: int = 200,
    n_train_baseline: int = 20000,
    seed: int = 12345,
    temperature: float = 1.0,
    tales: StoryWorld | None = None,
) -> TalesReport:
    """Baselines, the entropy floor, the model's bits/char, the gap closed and valid samples.

    tales is the story world the model was trained on: TinyTales() unless given (for a model
    trained on tiny-tales-zh, pass TinyTalesZh()).
    """
    from .data import bigram_bits_per_char, unigram_bits_per_char
    from .generate import generate

    tales = TinyTales() if tales is None else tales
    held_out = [s.text for s in tales.sample(n_eval, seed=seed)]
    train_texts = [s.text for s in tales.sample(n_train_baseline, seed=seed + 1)]
    floor = tales.entropy_floor(n=n_eval, seed=seed)
    bigram = bigram_bits_per_char(train_texts, held_out)
    model_bpc = story_bits_per_char(model, tokenizer, held_out)
    generator = torch.Generator().manual_seed(seed)
    valid = 0
    limit = min(model.args.max_seq_len - 1, 200)
    for _ in range(n_samples):
        new = generate(
            model,
            [tokenizer.bos_id],
            limit,
            temperature=temperature,
            stop_ids=[tokenizer.eos_id],
            generator=generator,
        )
        text = tokenizer.decode([t for t in new if t != tokenizer.eos_id])
        valid += bool(tales.is_valid(text))
    return TalesReport(
        unigram=unigram_bits_per_char(train_texts, held_out),
        bigram=bigram,
        floor=floor.bits_per_char,
        floor_stderr=floor.stderr,
        model=model_bpc,
        gap_closed=(bigram - model_bpc) / (bigram - floor.bits_per_char),
        valid_fraction=valid / n_samples if n_samples else float("nan"),
        n_samples=n_samples,
    )
