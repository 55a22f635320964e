"""`llama-edu finetune`: fine-tune a run (SFT, LoRA, rejection sampling or DPO) into a folder.

The base is a run folder made by `llama-edu train` (or another fine-tuning run), or
``pretrained`` for the shipped TinyTales model. The fine-tuning run folder holds:

    config.json        the model's shape, as in a training run (so `load_run` and
                       `llama-edu sample --checkpoint` read the result)
    finetune.json      the fine-tuning settings, with this module's format marker
    tokenizer.model    the chat tokenizer (sft, lora) or the base's own (rs, dpo)
    checkpoint/        model.safetensors (LoRA merged into the weights), optimizer.safetensors,
                       state.json and, for lora, adapter.safetensors (A and B only)
    adapter.safetensors  lora: the adapter, written by `lora.save_adapter`, for the base

The folder rules are those of `llama-edu train`: a new run is prepared in a staging folder and
renamed into place; a checkpoint is written whole before it replaces the previous one; a folder
that holds anything else is refused and nothing in it is deleted; resume=True continues from
the newest complete checkpoint and gives the same weights as a run that was never stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .model import Llama
from .runfiles import (
    RUN_FORMAT,
    RunFolderError,
    atomic_write_text,
    fsync_dir,
    fsync_tree,
    install_folder,
    make_staging_dir,
)
from .tokenizer import SentencePieceTokenizer

__all__ = ["FINETUNE_FORMAT", "METHODS", "FinetuneConfig", "FinetuneResult", "finetune",
           "load_base"]

METHODS = ("sft", "lora", "rs", "dpo")
FINETUNE_FORMAT = "llama_edu.finetune/1"  # the "format" field of finetune.json
SETTINGS = "finetune.json"
ADAPTER = "adapter.safetensors"
DEFAULT_LR = {"sft": 1e-3, "lora": 3e-3, "rs": 1e-3, "dpo": 2e-4}
DEFAULT_BATCH = {"sft": 16, "lora": 16, "rs": 256, "dpo": 16}
EVAL_SEED = 12345
LORA_TARGETS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3", "output")
"""Every linear layer: the output layer too, as only it can raise the new <|eot_id|>'s logit."""


@dataclass
class FinetuneConfig:
    """Everything that decides a fine-tuning run (saved in finetune.json)."""

    method: str
    base: str = "pretrained"
    steps: int = 100
    lr: float | None = None  # None: DEFAULT_LR[method]
    rank: int = 8  # lora
    alpha: float = 16.0  # lora
    targets: tuple[str, ...] = LORA_TARGETS  # lora; "output" is left out for tied embeddings
    # sft/lora: questions per step; rs: stories sampled per round; dpo: per step
    batch_size: int | None = None  # None: DEFAULT_BATCH[method]
    rs_batch: int = 64  # rs: kept stories per optimiser step (one pass over a round's stories)
    n_stories: int = 200  # sft/lora: training stories for tasks.qa_tasks
    eval_stories: int = 50  # sft/lora: held-out stories for the exact-match accuracy
    eval_samples: int = 200  # rs/dpo: samples for the valid share at the end
    beta: float = 0.2  # dpo
    nll_weight: float = 0.5  # dpo
    checkpoint_every: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        self.targets = tuple(self.targets)
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)} "
                             "(sft: supervised fine-tuning, lora: LoRA adapters, rs: rejection "
                             "sampling, dpo: direct preference optimisation)")
        if self.batch_size is None:
            self.batch_size = DEFAULT_BATCH[self.method]
        for name in ("steps", "batch_size", "rs_batch", "n_stories", "eval_stories",
                     "eval_samples", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a whole number >= 0, got {self.seed!r}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.method]
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < math.inf):
            raise ValueError(f"lr must be a number > 0, got {self.lr!r}; e.g. "
                             f"{DEFAULT_LR[self.method]:g} for {self.method}")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"the LoRA rank must be a whole number >= 1, got {self.rank!r}; "
                             "rank 0 would train nothing. Common values are 4, 8 or 16.")
        if not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < math.inf):
            raise ValueError(f"LoRA's alpha must be a number > 0, got {self.alpha!r}; the update "
                             "is scaled by alpha / rank, and alpha = 2 * rank is common.")
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise ValueError(f"targets must name at least one layer, e.g. wq,wv,output; got "
                             f"{list(self.targets)!r}")
        if not (isinstance(self.beta, (int, float)) and 0 < self.beta < math.inf):
            raise ValueError(f"beta must be a number > 0, got {self.beta!r}; 0.1 to 0.5 is usual")
        if not (isinstance(self.nll_weight, (int, float)) and 0 <= self.nll_weight < math.inf):
            raise ValueError(f"nll_weight must be a number >= 0, got {self.nll_weight!r}")


@dataclass
class FinetuneResult:
    """What a fine-tuning run produced; `metrics` holds the final measurement."""

    model: Llama
    tokenizer: SentencePieceTokenizer
    history: list[dict[str, float]]
    step: int
    out_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)


# --- the base model ------------------------------------------------------------------------


def _base_dir(base: str) -> Path:
    from .train import PRETRAINED_DIR

    return PRETRAINED_DIR if base == "pretrained" else Path(base).expanduser()


def load_base(base: str) -> tuple[Llama, SentencePieceTokenizer]:
    """The model and tokenizer of `base`: "pretrained" (the shipped model) or a run folder."""
    from .train import load_pretrained, load_run

    if base == "pretrained":
        return load_pretrained()
    folder = Path(base).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"the base {base} is not a folder. Give a run folder made by `llama-edu train` "
            "(e.g. runs/first), or 'pretrained' for the shipped TinyTales model."
        )
    return load_run(folder)


# --- the run folder ------------------------------------------------------------------------


def _inspect(out: Path) -> str:
    """'missing', 'empty', 'ours' (a fine-tuning run) or 'foreign'."""
    if not out.exists():
        return "missing"
    if not out.is_dir() or out.is_symlink():
        raise NotADirectoryError(f"{out} is not a folder. Give a new or empty folder for the "
                                 "fine-tuning run. Nothing was changed.")
    if not any(out.iterdir()):
        return "empty"
    try:
        saved = json.loads((out / SETTINGS).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "foreign"
    return "ours" if isinstance(saved, dict) and saved.get("format") == FINETUNE_FORMAT else (
        "foreign")


def _settings(cfg: FinetuneConfig) -> dict[str, Any]:
    return json.loads(json.dumps({"format": FINETUNE_FORMAT, **dataclasses.asdict(cfg)}))


def _refuse_taken(out: Path) -> None:
    """Raise unless out is missing or empty (a new run never goes into a used folder)."""
    kind = _inspect(out)
    if kind == "ours":
        raise FileExistsError(f"{out} already holds a fine-tuning run. Pass resume=True "
                              "(--resume) to continue it, or choose another folder. Nothing was "
                              "changed.")
    if kind == "foreign":
        raise FileExistsError(f"{out} is not empty and holds no fine-tuning run. Nothing was "
                              "changed; choose a new or empty folder.")


def _new_folder(out: Path, cfg: FinetuneConfig, model: Llama, tokenizer_file: Path) -> None:
    """Write config.json, finetune.json and the tokenizer in a staging folder, then install it."""
    _refuse_taken(out)
    staging = make_staging_dir(out.parent, out.name)
    try:
        shutil.copyfile(tokenizer_file, staging / "tokenizer.model")
        config = {"format": RUN_FORMAT, "model": model.args.to_dict()}
        atomic_write_text(staging / "config.json", json.dumps(config, indent=1) + "\n")
        atomic_write_text(staging / SETTINGS, json.dumps(_settings(cfg), indent=1) + "\n")
        install_folder(staging, out, last=SETTINGS)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _check_resumable(out: Path, cfg: FinetuneConfig) -> None:
    kind = _inspect(out)
    if kind in ("missing", "empty"):
        raise FileNotFoundError(f"{out} holds no fine-tuning run to resume. To start one there, "
                                "leave out resume=True (--resume).")
    if kind == "foreign":
        raise RunFolderError(f"cannot resume: {out} is not a fine-tuning run (it has no "
                             f"{SETTINGS} written by llama-edu finetune). Nothing was changed.")
    saved = json.loads((out / SETTINGS).read_text(encoding="utf-8"))
    mine = _settings(cfg)
    differing = [f"{k}: saved {saved.get(k)!r}, now {v!r}" for k, v in mine.items()
                 if k != "steps" and saved.get(k) != v]
    if differing:
        raise ValueError("cannot resume: the settings differ from the saved run in "
                         + "; ".join(differing) + ". Use the saved settings (only --steps may "
                         "change), or start a new run in another folder.")


# --- checkpoints ---------------------------------------------------------------------------


def _plain_weights(model: Llama) -> dict[str, torch.Tensor]:
    """The model's weights under plain Llama names, each LoRA update added into its weight."""
    from .lora import lora_layers

    layers = lora_layers(model)
    weights = {}
    for key, value in model.state_dict().items():
        owner = next((n for n in layers if key.startswith(f"{n}.")), None)
        if owner is None:
            weights[key] = value.detach().cpu().contiguous()
        elif key == f"{owner}.base.bias":
            weights[f"{owner}.bias"] = value.detach().cpu().contiguous()
    for name, layer in layers.items():
        w = layer.base.weight
        merged = w.detach().float() + layer.delta_weight().detach()
        weights[f"{name}.weight"] = merged.to(w.dtype).cpu().contiguous()
    if model.args.tie_embeddings:
        weights.pop("output.weight", None)
    return weights


def _save(out: Path, model: Llama, optimizer: torch.optim.Optimizer, state: dict[str, Any],
          generator: torch.Generator, cfg: FinetuneConfig) -> None:
    """Write a whole checkpoint to a staging folder, then swap it in (as train.save_checkpoint)."""
    from .lora import save_adapter
    from .train import CHECKPOINT_FILES, write_optimizer_state

    target, old = out / "checkpoint", out / ".checkpoint.old"
    staging = make_staging_dir(out, "checkpoint")
    try:
        save_file(_plain_weights(model), staging / "model.safetensors")
        write_optimizer_state(staging, optimizer, generator, state)
        if cfg.method == "lora":
            save_adapter(model, staging / ADAPTER, base_run=cfg.base)
        fsync_tree(staging)
        if all((target / name).is_file() for name in CHECKPOINT_FILES):
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        elif target.exists():
            shutil.rmtree(target)  # incomplete: it cannot be loaded; .checkpoint.old stays
        os.replace(staging, target)
        fsync_dir(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _load(out: Path, model: Llama, optimizer: torch.optim.Optimizer,
          generator: torch.Generator, cfg: FinetuneConfig) -> dict[str, Any]:
    """Load the newest complete checkpoint into model, optimizer and generator; the state."""
    from .lora import load_adapter
    from .train import CheckpointError, latest_checkpoint, load_checkpoint

    if cfg.method != "lora":
        state = load_checkpoint(out, model, optimizer, generator)
    else:
        found = latest_checkpoint(out)
        if found is None or not (found / ADAPTER).is_file():
            raise CheckpointError(f"{out} has no complete checkpoint with an adapter to resume "
                                  "from; start a new run in another folder.")
        plain = Llama(model.args)  # takes the merged weights; the adapter goes into model
        state = load_checkpoint(out, plain, optimizer, generator)
        load_adapter(model, found / ADAPTER)
    state.pop("param_groups", None)
    return state


# --- the methods ---------------------------------------------------------------------------


def _shape(cfg: FinetuneConfig, model: Llama, vocab_size: int) -> Llama:
    """The base model made ready for cfg.method: chat rows for sft/lora, adapters for lora."""
    from .lora import add_lora
    from .posttrain import resize_vocab

    if cfg.method in ("rs", "dpo"):
        return model
    model = resize_vocab(model, vocab_size)
    if cfg.method == "lora":
        targets = list(cfg.targets)
        if model.args.tie_embeddings and cfg.targets == LORA_TARGETS:
            targets.remove("output")  # it shares its weight with the embeddings
        add_lora(model, cfg.rank, cfg.alpha, targets)
    return model


def _prepare(cfg: FinetuneConfig, new_tokenizer: Path) -> tuple[Llama, Path]:
    """The model to train and its tokenizer file (a chat tokenizer is written to new_tokenizer)."""
    from .posttrain import chat_tokenizer

    model, tokenizer = load_base(cfg.base)
    if cfg.method in ("rs", "dpo"):
        return model, _base_dir(cfg.base) / "tokenizer.model"
    chat = chat_tokenizer(tokenizer, new_tokenizer)
    return _shape(cfg, model, chat.vocab_size), new_tokenizer


def _resumed_model(cfg: FinetuneConfig, tokenizer: SentencePieceTokenizer) -> Llama:
    """The base model shaped as the saved run's (its weights come from the checkpoint later)."""
    model, _ = load_base(cfg.base)
    return _shape(cfg, model, tokenizer.vocab_size)


def _sft_step(model: Llama, optimizer: torch.optim.Optimizer, examples: list[Any],
              cfg: FinetuneConfig, generator: torch.Generator) -> dict[str, float]:
    from .posttrain import collate_sft, masked_lm_loss

    picks = torch.randint(len(examples), (cfg.batch_size,), generator=generator).tolist()
    # lengths rounded up to a multiple of 32: see collate_sft (up to 30x faster on 2 CPU threads)
    inputs, targets, mask = collate_sft([examples[i] for i in picks], 0, multiple_of=32)
    keep = max(model.args.max_seq_len, max(len(examples[i][0]) for i in picks))
    inputs, targets, mask = inputs[:, :keep], targets[:, :keep], mask[:, :keep]  # only padding
    loss = masked_lm_loss(model(inputs), targets, mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": loss.item()}


def _evaluate(model: Llama, tokenizer: SentencePieceTokenizer, cfg: FinetuneConfig
              ) -> dict[str, float]:
    from .posttrain import qa_eval, sample_stories, story_stats
    from .tasks import qa_tasks

    if cfg.method in ("sft", "lora"):
        tasks = qa_tasks(cfg.eval_stories, "test", seed=cfg.seed)
        return {"exact_match": qa_eval(model, tokenizer, tasks)["all"], "questions": len(tasks)}
    texts = sample_stories(model, tokenizer, cfg.eval_samples, seed=EVAL_SEED, temperature=1.0)
    stats = story_stats(texts)
    return {"valid": stats["valid"], "distinct": stats["distinct"], "samples": len(texts)}


def finetune(cfg: FinetuneConfig, out_dir: str | os.PathLike[str], resume: bool = False,
             progress: bool = True) -> FinetuneResult:
    """Fine-tune cfg.base with cfg.method into out_dir: checkpointed, resumable, measured.

    sft and lora train on `tasks.qa_tasks(cfg.n_stories, "train")` in the chat format and end
    with the exact-match accuracy on held-out questions; rs and dpo take
    `preference.rejection_sampling_step` / `preference.dpo_step` steps (the reference for DPO
    is the base model) and end with the share of valid stories among cfg.eval_samples samples
    at temperature 1.
    """
    from .posttrain import sft_examples
    from .preference import dpo_step, rejection_sampling_step
    from .tasks import qa_tasks

    out = Path(out_dir).expanduser()
    if cfg.base != "pretrained":
        if not Path(cfg.base).expanduser().is_dir():
            load_base(cfg.base)  # raises: says what a base must be
        cfg.base = str(Path(cfg.base).expanduser().resolve())
    if resume:
        _check_resumable(out, cfg)
    else:
        _refuse_taken(out)
    torch.manual_seed(cfg.seed)  # LoRA's A starts random
    if resume:
        model = _resumed_model(cfg, SentencePieceTokenizer(out / "tokenizer.model"))
    else:
        work = make_staging_dir(out.parent, out.name, "tokenizer")
        try:
            model, tokenizer_file = _prepare(cfg, work / "tokenizer.model")
            _new_folder(out, cfg, model, tokenizer_file)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    tokenizer = SentencePieceTokenizer(out / "tokenizer.model")
    ref = copy.deepcopy(model).requires_grad_(False).eval() if cfg.method == "dpo" else None
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(cfg.seed)
    state: dict[str, Any] = {"step": 0, "history": []}
    if resume:
        state = _load(out, model, optimizer, generator, cfg)
    examples = []
    if cfg.method in ("sft", "lora"):
        tasks = qa_tasks(cfg.n_stories, "train", seed=cfg.seed)
        examples = sft_examples(tokenizer, tasks, model.args.max_seq_len)
    model.train()
    step = state["step"]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=min(step, cfg.steps), desc=cfg.method, unit="step")
    try:
        while step < cfg.steps:
            if cfg.method in ("sft", "lora"):
                record = _sft_step(model, optimizer, examples, cfg, generator)
            elif cfg.method == "rs":
                record = rejection_sampling_step(model, tokenizer, optimizer, cfg.batch_size,
                                                 generator=generator, batch_size=cfg.rs_batch)
            else:
                record = dpo_step(model, ref, tokenizer, optimizer, cfg.batch_size, cfg.beta,
                                  cfg.nll_weight, generator=generator)
            step += 1
            state["history"].append({"step": step, **record})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                _save(out, model, optimizer, {**state, "step": step}, generator, cfg)
    finally:
        if bar is not None:
            bar.close()
    state["step"] = step
    if cfg.method == "lora":
        from .lora import save_adapter

        save_adapter(model, out / ADAPTER, base_run=cfg.base, overwrite=False)
    model.eval()
    metrics = _evaluate(model, tokenizer, cfg)
    return FinetuneResult(model, tokenizer, state["history"], step, out, metrics)
