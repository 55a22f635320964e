"""Training on TinyTales: time, throughput and quality of the workbook's recommended run.

Usage:
    python benchmarks/bench_train.py                 # the run chapter 09 makes on this device
    python benchmarks/bench_train.py --samples 200   # how many stories to sample for validity
    python benchmarks/bench_train.py --set max_steps=700 --set max_lr=0.006   # a variant
    python benchmarks/bench_train.py --mfu           # CUDA only: ~100M model, bf16, compile, SDPA

The first form trains `recommended_config(device)` (the same config as notebook 08) and then runs
`tales_report` on 1,000 held-out stories: bits/char against the unigram, bigram and entropy
floor, the share of the bigram-to-floor gap closed, and the share of sampled stories that
TinyTales accepts as valid. `--mfu` measures tokens/s and model FLOPs utilisation:
FLOPs per token = 6 * parameters (without the embedding lookup) + 12 * layers * dim * seq_len
(attention scores and values, forward and backward), against the GPU's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    import llama_edu  # noqa: F401
except ImportError:  # running from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from llama_edu.device import get_device
from llama_edu.model import Llama, ModelArgs
from llama_edu.train import TrainConfig, recommended_config, tales_report, train

# Dense bf16 peaks (without sparsity) from NVIDIA's data sheets, in FLOP/s.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}


def machine() -> str:
    """A one-line description of where this runs."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    return f"{torch.get_num_threads()} CPU threads ({cpu}), torch {torch.__version__}"


def quality(samples: int, seed: int, changes: dict[str, Any] | None = None) -> None:
    """Train the recommended run (with `changes` to its TrainConfig); print time, speed, report."""
    device = get_device()
    cfg = dataclasses.replace(recommended_config(device.type), **{"seed": seed, **(changes or {})})
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = train(cfg, out, progress=False)
        seconds = time.perf_counter() - start
    tokens = result.step * cfg.batch_size * cfg.grad_accum * cfg.seq_len
    report = tales_report(result.model, result.tokenizer, n_eval=1000, n_samples=samples)
    print(f"# {machine()}; recommended_config({device.type!r}), seed {seed}, changes {changes}")
    print("| steps | wall time (s) | tokens/s | model bits/char | floor | bigram | gap closed "
          "| valid stories |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {result.step} | {seconds:.0f} | {tokens / seconds:,.0f} | {report.model:.4f} | "
        f"{report.floor:.4f} | {report.bigram:.4f} | {report.gap_closed:.1%} | "
        f"{report.valid_fraction:.1%} of {report.n_samples} |"
    )


def flops_per_token(args: ModelArgs, params: int, seq_len: int) -> float:
    """Training FLOPs per token: 6 N for the weights plus attention's seq-dependent part."""
    non_embedding = params - args.vocab_size * args.dim  # the lookup is not a matmul
    return 6 * non_embedding + 12 * args.n_layers * args.dim * seq_len


def mfu(steps: int, peak_tflops: float | None) -> None:
    """Tokens/s and model FLOPs utilisation of a ~100M-parameter Llama (bf16, compile, SDPA)."""
    if not torch.cuda.is_available():
        raise SystemExit("--mfu needs a CUDA GPU; this machine has none.")
    name = torch.cuda.get_device_name()
    peak = peak_tflops * 1e12 if peak_tflops else next(
        (v for k, v in PEAK_BF16.items() if k in name), None
    )
    if peak is None:
        raise SystemExit(f"unknown peak for {name}; pass --peak-tflops.")
    args = ModelArgs(dim=768, n_layers=14, n_heads=12, vocab_size=1024, multiple_of=256,
                     max_seq_len=1024)  # fmt: skip
    cfg = TrainConfig(batch_size=32, seq_len=1024)
    torch.manual_seed(0)
    model = Llama(args).cuda()
    params = model.num_params()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=True)
    step_fn = torch.compile(model)
    x = torch.randint(0, args.vocab_size, (cfg.batch_size, cfg.seq_len + 1), device="cuda")

    def one_step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = step_fn(x[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(10):  # compile and warm up
        one_step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens_per_s = steps * cfg.batch_size * cfg.seq_len / seconds
    achieved = flops_per_token(args, params, cfg.seq_len) * tokens_per_s
    print(f"# {machine()}; {params / 1e6:.1f}M parameters, batch {cfg.batch_size} x "
          f"{cfg.seq_len} tokens, bf16 autocast, torch.compile, SDPA")
    print("| tokens/s | achieved TFLOP/s | peak TFLOP/s | MFU |")
    print("|---:|---:|---:|---:|")
    print(f"| {tokens_per_s:,.0f} | {achieved / 1e12:.0f} | {peak / 1e12:.0f} | "
          f"{achieved / peak:.1%} |")


def main() -> None:
    """Parse the arguments and run one of the two measurements."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE",
        help="change one TrainConfig field of the run (value as JSON), e.g. max_steps=700",
    )  # fmt: skip
    parser.add_argument("--mfu", action="store_true")
    parser.add_argument("--steps", type=int, default=50, help="timed steps for --mfu")
    parser.add_argument("--peak-tflops", type=float, help="override the GPU's dense bf16 peak")
    args = parser.parse_args()
    if args.mfu:
        mfu(args.steps, args.peak_tflops)
    else:
        changes = {}
        for item in args.set:
            field, _, value = item.partition("=")
            if field not in {f.name for f in dataclasses.fields(TrainConfig)} or not value:
                parser.error(f"--set {item!r}: expected FIELD=VALUE with a TrainConfig field.")
            try:
                changes[field] = json.loads(value)
            except json.JSONDecodeError:  # a plain word, e.g. device=cpu
                changes[field] = value
        quality(args.samples, args.seed, changes)


if __name__ == "__main__":
    main()
