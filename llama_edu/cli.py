"""The `llama-edu` command line."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import classroom
from .hub import REAL_CHECKPOINTS
from .messages import language, translate

if TYPE_CHECKING:
    from .train import TrainConfig

DEFAULT_CORPORA = (
    "tiny-tales, tiny-tales-zh, python-docs, tiny-shakespeare, or a path to a UTF-8 text file"
)


def _student(args: argparse.Namespace) -> int:
    source = Path(args.source) if args.source else classroom.default_notebook_dir()
    try:
        written = classroom.write_student_versions(source, args.out_dir)
    except (classroom.MarkerError, FileNotFoundError, ValueError) as exc:
        print(f"llama-edu student: {translate(str(exc))}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    print(translate(f"{len(written)} student notebooks written to {args.out_dir}"))
    return 0


def _grade(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    grades = []
    for path in args.notebooks:
        grades.append(classroom.grade_notebook(path, time_limit=args.time_limit))
        if not args.json:
            print(classroom.grade_report(grades[-1:]), flush=True)
    if args.json:
        print(json.dumps([dataclasses.asdict(g) for g in grades], indent=1, ensure_ascii=False))
    return 1 if any(g.error for g in grades) else 0


def _fail(command: str, exc: BaseException | str) -> int:
    """Print one plain line about what went wrong to stderr; return the exit code 2."""
    message = re.sub(r"\s*\n\s*", " ", translate(str(exc))).strip() or type(exc).__name__
    print(f"llama-edu {command}: {message}", file=sys.stderr)
    return 2


def _train(args: argparse.Namespace) -> int:
    from .data import CORPORA
    from .loss_report import gap_report
    from .runfiles import RunFolderError
    from .train import TINY_TALES_ZH_VOCAB_SIZE, CheckpointError, TrainConfig, train

    if args.minutes is not None and not args.minutes > 0:
        return _fail("train", f"--minutes must be above 0, got {args.minutes}. Give the minutes "
                     "to train for, or leave --minutes out.")
    named = ("tiny-tales", "tiny-tales-zh", "python-docs", *CORPORA)
    if args.corpus not in named and Path(args.corpus).expanduser().is_dir():
        return _fail("train", f"--corpus {args.corpus} is a folder. Give a UTF-8 text file or "
                     f"one of the named corpora ({DEFAULT_CORPORA.rsplit(',', 1)[0]}).")
    fields = {
        "corpus": args.corpus, "preset": args.preset, "seed": args.seed,
        "max_minutes": args.minutes, "device": args.device, "compile": args.compile,
    }
    for name in ("max_steps", "batch_size", "seq_len", "vocab_size", "max_lr", "n_stories"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    if args.corpus == "tiny-tales-zh" and args.vocab_size is None:
        fields["vocab_size"] = TINY_TALES_ZH_VOCAB_SIZE  # room for its ~300 characters
    try:
        cfg = TrainConfig(**fields)
        if args.minutes is not None and args.max_steps is None:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise ValueError("under torchrun give --max-steps, so that every process agrees.")
            cfg.max_steps = _steps_for_minutes(cfg, args.minutes)
        result = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite,
                       callback=_print_evaluation)
    except (ValueError, OSError, RuntimeError, CheckpointError, RunFolderError) as exc:
        return _fail("train", exc)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    last = next((h for h in reversed(result.history) if "val_loss" in h), None)
    print(translate(f"{result.stopped} after {result.step} steps; run saved in {result.out_dir}"))
    if last:
        print(translate(
            f"validation loss {last['val_loss']:.4f} nats/token, {last['val_bpc']:.4f} bits/char"
        ))
        print(translate(f"at the end: {gap_report(last, result.baselines)}"))
    return 0


def _print_evaluation(record: dict[str, float]) -> None:
    """Print one line per evaluation: the step, the loss and where it stands (gap_report)."""
    from .loss_report import gap_report

    if "val_loss" in record:
        print(translate(f"step {record['step']}: val loss {record['val_loss']:.4f} nats/token; "
                        f"{gap_report(record)}"), flush=True)


def _steps_for_minutes(cfg: TrainConfig, minutes: float) -> int:
    """Estimate how many optimiser steps fit in `minutes`, from a short timed trial."""
    import time

    import torch
    import torch.nn.functional as F

    from .device import get_device
    from .model import Llama

    device = get_device(cfg.device)
    model = Llama(cfg.model_args()).to(device)
    x = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len), device=device)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        F.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
        times.append(time.perf_counter() - start)
    per_step = min(times) * cfg.grad_accum * 1.3  # optimiser, data and evaluation overhead
    return max(10, int(minutes * 60 / per_step))


def _sample(args: argparse.Namespace) -> int:
    import torch

    from .generate import generate
    from .train import CheckpointError, load_run, read_run_config

    try:
        (args.prompt or "").encode("utf-8")
    except UnicodeEncodeError:
        return _fail("sample", "--prompt is not valid UTF-8 text (the shell passed bytes that "
                     "do not decode). Give the prompt as UTF-8, or change the terminal's encoding.")
    if args.n < 1:
        return _fail("sample", f"-n must be at least 1 (how many samples to write), got {args.n}.")
    if args.max_new_tokens < 0:
        return _fail("sample", "--max-new-tokens must be 0 or more, got "
                     f"{args.max_new_tokens}.")
    try:
        model, tokenizer = load_run(args.checkpoint)
        if args.prompt is None:  # a story opening in the language of the run's corpus
            corpus = read_run_config(args.checkpoint)["train"].get("corpus", "")
            args.prompt = "\u4ece\u524d\uff0c" if corpus.endswith("-zh") else "Once upon a time,"
        prompt = tokenizer.encode(args.prompt, bos=True)
        generator = torch.Generator().manual_seed(args.seed)
        for _ in range(args.n):
            new = generate(model, prompt, args.max_new_tokens, temperature=args.temperature,
                           top_k=args.top_k, top_p=args.top_p, stop_ids=[tokenizer.eos_id],
                           generator=generator)
            new = [t for t in new if t != tokenizer.eos_id]
            print(tokenizer.decode(prompt[1:] + new))
    except (ValueError, OSError, RuntimeError, CheckpointError) as exc:
        return _fail("sample", exc)
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from .finetune import FinetuneConfig, finetune
    from .runfiles import RunFolderError
    from .train import CheckpointError

    fields = {"method": args.method, "base": args.base, "seed": args.seed}
    for name in ("steps", "lr", "rank", "alpha", "batch_size", "rs_batch", "n_stories",
                 "eval_stories", "eval_samples", "beta"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    if args.method != "rs" and args.rs_batch is not None:
        return _fail("finetune", f"--rs-batch is rejection sampling's setting; --method "
                     f"{args.method} does not use it. Leave it out, or use --method rs.")
    if args.method != "lora" and (args.rank, args.alpha, args.targets) != (None, None, None):
        return _fail("finetune", f"--rank, --alpha and --targets are LoRA's settings; --method "
                     f"{args.method} does not use them. Leave them out, or use --method lora.")
    if args.targets is not None:
        fields["targets"] = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    try:
        result = finetune(FinetuneConfig(**fields), args.out, resume=args.resume)
    except (ValueError, OSError, RuntimeError, CheckpointError, RunFolderError) as exc:
        return _fail("finetune", exc)
    except KeyboardInterrupt:
        return _fail("finetune", f"interrupted; the last checkpoint in {args.out} is kept, and "
                     "--resume continues from it.")
    print(translate(f"{args.method}: {result.step} steps; run saved in {result.out_dir}"))
    m = result.metrics
    if "exact_match" in m:
        print(translate(f"held-out exact-match accuracy: {m['exact_match']:.3f} "
                        f"({m['questions']} questions)"))
    else:
        print(translate(f"valid stories: {m['valid']:.3f} of {m['samples']} samples at "
                        f"temperature 1 (distinct: {m['distinct']:.3f})"))
    return 0


def _download(args: argparse.Namespace) -> int:
    from .hub import DOWNLOAD_MARKER, download_hf

    repo = REAL_CHECKPOINTS.get(args.name, args.name)
    had = (Path(args.out).expanduser() / DOWNLOAD_MARKER).is_file()
    try:
        folder = download_hf(repo, args.out, revision=args.revision, endpoint=args.endpoint)
    except (ValueError, OSError, RuntimeError, ImportError) as exc:
        return _fail("download", exc)
    except KeyboardInterrupt:
        return _fail("download", f"interrupted; nothing was written to {args.out}.")
    load = f"llama_edu.interop.load_hf({str(folder)!r})"
    if had:
        print(translate(f"{repo} was already in {folder}; load it with {load}"))
    else:
        print(translate(f"{repo} was downloaded into {folder}; load it with {load}"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser for all subcommands."""
    parser = argparse.ArgumentParser(
        prog="llama-edu", description="Tools for the llama_edu workbook."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    student = sub.add_parser(
        "student", help="write student versions (solutions removed, outputs cleared)"
    )
    student.add_argument("out_dir", metavar="OUT_DIR", help="folder for the student notebooks")
    student.add_argument(
        "--source", help="folder with the instructor notebooks (default: the workbook's notebooks/)"
    )
    student.set_defaults(func=_student)

    gr = sub.add_parser(
        "grade",
        help="run submitted notebooks in fresh kernels and report each exercise "
        "(this runs the students' code: use a sandbox or a throwaway environment)",
    )
    gr.add_argument("notebooks", nargs="+", metavar="NOTEBOOK.ipynb")
    gr.add_argument("--json", action="store_true", help="print a machine-readable report")
    gr.add_argument(
        "--time-limit", type=float, default=900.0, dest="time_limit",
        help="seconds per notebook (default 900)",
    )
    gr.set_defaults(func=_grade)

    tr = sub.add_parser("train", help="train a small Llama and save checkpoints into --out")
    tr.add_argument("--corpus", default="tiny-tales", help=DEFAULT_CORPORA)
    tr.add_argument("--preset", default="tiny", help="model preset (see ModelArgs.from_name)")
    tr.add_argument("--out", required=True, help="run folder, e.g. runs/first")
    tr.add_argument("--minutes", type=float, help="train for about this long")
    tr.add_argument("--max-steps", type=int, dest="max_steps")
    tr.add_argument("--batch-size", type=int, dest="batch_size")
    tr.add_argument("--seq-len", type=int, dest="seq_len")
    tr.add_argument("--vocab-size", type=int, dest="vocab_size")
    tr.add_argument("--n-stories", type=int, dest="n_stories")
    tr.add_argument("--max-lr", type=float, dest="max_lr")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--device", help="cpu, cuda, cuda:1 or mps (default: the best available)")
    tr.add_argument(
        "--compile", action="store_true", help="torch.compile (CUDA, or CPU with a C++ compiler)"
    )
    tr.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    tr.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    tr.set_defaults(func=_train)

    sa = sub.add_parser("sample", help="write text with a trained run")
    sa.add_argument("--checkpoint", required=True, help="a run folder made by `llama-edu train`")
    sa.add_argument("--prompt", default=None,
                    help="the text to continue (default: a story opening in the language of the "
                    "run's corpus)")
    sa.add_argument("--max-new-tokens", type=int, default=100, dest="max_new_tokens")
    sa.add_argument("--temperature", type=float, default=0.8)
    sa.add_argument("--top-k", type=int, dest="top_k")
    sa.add_argument("--top-p", type=float, dest="top_p")
    sa.add_argument("-n", type=int, default=1, help="how many samples")
    sa.add_argument("--seed", type=int, default=0)
    sa.set_defaults(func=_sample)

    ft = sub.add_parser("finetune", help="fine-tune a run (sft, lora, rs or dpo) into --out")
    ft.add_argument("--method", required=True, choices=("sft", "lora", "rs", "dpo"),
                    help="sft: supervised fine-tuning on questions about stories; lora: the same "
                    "with LoRA adapters; rs: rejection sampling; dpo: DPO on valid/invalid stories")
    ft.add_argument("--base", required=True,
                    help="a run folder made by `llama-edu train`, or 'pretrained' (shipped model)")
    ft.add_argument("--out", required=True, help="a new or empty folder, e.g. runs/sft")
    ft.add_argument("--steps", type=int, help="optimiser steps; for rs, rounds of sampling "
                    "(default 100)")
    ft.add_argument("--lr", type=float, help="learning rate (default per method)")
    ft.add_argument("--rank", type=int, help="LoRA rank (default 8)")
    ft.add_argument("--alpha", type=float, help="LoRA alpha (default 16)")
    ft.add_argument("--targets", help="LoRA's layers, comma-separated (default: all, "
                    "wq,wk,wv,wo,w1,w2,w3,output)")
    ft.add_argument("--batch-size", type=int, dest="batch_size",
                    help="questions (sft, lora) or sampled stories (dpo) per step (default 16), "
                    "or stories sampled per round (rs, default 256)")
    ft.add_argument("--rs-batch", type=int, dest="rs_batch",
                    help="rs: kept stories per optimiser step; each round trains once on every "
                    "valid story it sampled (default 64)")
    ft.add_argument("--n-stories", type=int, dest="n_stories",
                    help="training stories for the questions (sft, lora; default 200)")
    ft.add_argument("--eval-stories", type=int, dest="eval_stories",
                    help="held-out stories for the accuracy at the end (sft, lora; default 50)")
    ft.add_argument("--eval-samples", type=int, dest="eval_samples",
                    help="samples for the valid share at the end (rs, dpo; default 200)")
    ft.add_argument("--beta", type=float, help="DPO's beta (default 0.2)")
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    ft.set_defaults(func=_finetune)

    dl = sub.add_parser("download", help="download a Llama checkpoint (safetensors) from the "
                        "Hugging Face Hub into --out")
    dl.add_argument("name", metavar="NAME_OR_REPO",
                    help="a repository id such as HuggingFaceTB/SmolLM2-135M, or a short name: "
                    + ", ".join(REAL_CHECKPOINTS))
    dl.add_argument("--out", required=True, help="a new or empty folder, e.g. models/smollm2")
    dl.add_argument("--revision", default="main", help="branch, tag or commit (default main)")
    dl.add_argument("--endpoint", help="the Hub's address (default: HF_ENDPOINT or "
                    "https://huggingface.co); gated models need HF_TOKEN or `hf auth login`")
    dl.set_defaults(func=_download)
    if language() != "en":
        _translate_help(parser)
    return parser


def _translate_help(parser: argparse.ArgumentParser) -> None:
    """Translate the help and description texts of a parser and its subcommands in place."""
    parser.description = parser.description and translate(parser.description)
    for action in parser._actions:
        if action.help:
            action.help = translate(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = choice.help and translate(choice.help)
            for sub in set(action.choices.values()):
                _translate_help(sub)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
