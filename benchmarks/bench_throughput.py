"""Training tokens per second: llama_edu's Llama against transformers' LlamaForCausalLM.

Usage:  python benchmarks/bench_throughput.py [--threads 2] [--repeats 7] [--steps 5] [--compile]
        python benchmarks/bench_throughput.py --json benchmarks/results/throughput.json
        python benchmarks/bench_throughput.py --device cuda --bf16 --compile --configs tiny 100m

Both models are built from the same ModelArgs (transformers' through `interop.hf_config_kwargs`)
and carry the same weights. A step is what `llama_edu.train` does: forward on a batch of random
token ids, cross-entropy against the next ids, backward, gradient clipping and AdamW. The two
models take turns in one process (one timed block of --steps steps each per repeat), so a busy
moment of the machine falls on both; the ratio is the median over repeats of the per-repeat
ratio. Configurations: `tiny` (the workbook's CPU run: batch 32 x 128 tokens) and `small`
(dim 256, 6 layers, 8 heads, 4 key/value heads, vocabulary 2,048, batch 16 x 256).
--compile adds a third contender, llama_edu's Llama under torch.compile, and reports the seconds
its first step takes (the compilation) and how many seconds of a 3-minute run that costs net.
--profile prints the share of a step's CPU time spent in matrix multiplies, in SDPA's kernels
and in everything else, for each contender. --matmuls times the tiny preset's projections
(forward and backward of 4,096 tokens) separate and fused, and at other SwiGLU widths.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from llama_edu.interop import hf_config_kwargs, meta_to_hf
from llama_edu.model import Llama, ModelArgs

CONFIGS = {
    "tiny": (ModelArgs.from_name("tiny", vocab_size=512), 32, 128),
    "small": (
        ModelArgs.from_name("tiny", dim=256, n_layers=6, n_heads=8, n_kv_heads=4,
                            vocab_size=2048, multiple_of=64),
        16,
        256,
    ),
    # the ~100M model of bench_train.py --mfu: for a GPU, far too slow for 2 CPU cores
    "100m": (
        ModelArgs(dim=768, n_layers=14, n_heads=12, vocab_size=1024, multiple_of=256,
                  max_seq_len=1024),
        32,
        1024,
    ),
}


def build_pair(args: ModelArgs, device: str = "cpu") -> tuple[torch.nn.Module, torch.nn.Module]:
    """llama_edu's Llama and transformers' LlamaForCausalLM with the same weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    ours = Llama(args)
    config = LlamaConfig(**hf_config_kwargs(args))
    config._attn_implementation = "sdpa"
    theirs = LlamaForCausalLM(config)
    theirs.load_state_dict(meta_to_hf(ours.state_dict(), args), strict=False)
    return ours.to(device), theirs.to(device)


def make_step(model: torch.nn.Module, hf: bool, bf16: bool = False) -> callable:
    """One training step (forward, loss, backward, clip, AdamW) on a fixed random batch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95),
                                  weight_decay=0.1)
    device = next(model.parameters()).device.type

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x).logits if hf else model(x)  # (batch, seq, vocab)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def time_shares(step: callable, x: torch.Tensor, y: torch.Tensor, steps: int) -> dict[str, float]:
    """Share of a step's CPU time in matrix multiplies, in SDPA's kernels, and in the rest."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(x, y)
    kinds = {"matmul": 0.0, "attention": 0.0, "rest": 0.0}
    for event in prof.key_averages():
        if event.key in ("aten::mm", "aten::addmm", "aten::bmm"):
            kinds["matmul"] += event.self_cpu_time_total
        elif "scaled_dot_product" in event.key:
            kinds["attention"] += event.self_cpu_time_total
        else:
            kinds["rest"] += event.self_cpu_time_total
    total = sum(kinds.values())
    return {kind: t / total for kind, t in kinds.items()}


def linear_ms(x: torch.Tensor, shapes: list[tuple[int, int]], fused: bool, repeats: int) -> float:
    """Best ms of forward + backward through x @ W.T for each W (fused: one W stacked from all)."""
    weights = [(torch.randn(*shape) * 0.02).requires_grad_() for shape in shapes]
    best = float("inf")
    for r in range(repeats + 2):  # two warm-up rounds
        start = time.perf_counter()
        outs = [F.linear(x, torch.cat(weights))] if fused else [F.linear(x, w) for w in weights]
        sum(out.square().sum() for out in outs).backward()
        if r >= 2:
            best = min(best, time.perf_counter() - start)
    return best * 1e3


def matmul_sizes(repeats: int) -> None:
    """The tiny preset's projections: does fusing them, or another SwiGLU width, run faster?"""
    x = torch.randn(32 * 128, 128, requires_grad=True)  # one tiny batch: (tokens, dim)
    cases = [
        ("wq, wk, wv separate", [(128, 128), (64, 128), (64, 128)], False),
        ("wq, wk, wv fused", [(128, 128), (64, 128), (64, 128)], True),
        ("w1, w3 separate, width 352", [(352, 128)] * 2, False),
        ("w1, w3 fused, width 352", [(352, 128)] * 2, True),
        ("w1, w3 separate, width 320", [(320, 128)] * 2, False),
        ("w1, w3 separate, width 384", [(384, 128)] * 2, False),
    ]
    print("| projections of 4,096 tokens (forward + backward) | best ms |\n|---|---:|")
    for name, shapes, fused in cases:
        print(f"| {name} | {linear_ms(x, shapes, fused, repeats):.1f} |", flush=True)


def measure(
    name: str,
    repeats: int,
    steps: int,
    compiled: bool = False,
    shares: bool = False,
    device: str = "cpu",
    bf16: bool = False,
) -> dict:
    """Tokens per second of both models on one configuration, taking turns."""
    args, batch, seq = CONFIGS[name]
    ours, theirs = build_pair(args, device)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, args.vocab_size, (batch, seq + 1), generator=gen).to(device)
    x, y = ids[:, :-1], ids[:, 1:]
    runs = {
        "llama_edu": make_step(ours, hf=False, bf16=bf16),
        "transformers": make_step(theirs, hf=True, bf16=bf16),
    }
    compile_s = None
    if compiled:
        twin = Llama(args).to(device)
        twin.load_state_dict(ours.state_dict())
        runs["llama_edu compiled"] = make_step(torch.compile(twin), hf=False, bf16=bf16)
        start = time.perf_counter()
        runs["llama_edu compiled"](x, y)  # the first call compiles forward and backward
        compile_s = time.perf_counter() - start
    for step in runs.values():  # warm-up: allocator, kernels, optimizer state
        step(x, y)
        step(x, y)
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(repeats):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for key in order:
            start = time.perf_counter()
            for _ in range(steps):
                runs[key](x, y)
            rates[key].append(batch * seq * steps / (time.perf_counter() - start))
    ratios = [a / b for a, b in zip(rates["llama_edu"], rates["transformers"], strict=True)]
    extra = {}
    if shares and device == "cpu":  # the profiler's CPU times say little about a GPU
        extra["time_shares"] = {k: time_shares(runs[k], x, y, steps) for k in runs}
    if compiled:
        eager, fast = (statistics.median(rates[k]) for k in ("llama_edu", "llama_edu compiled"))
        extra |= {
            "compile_s": compile_s,
            "compiled_ratio_median": statistics.median(
                a / b for a, b in zip(rates["llama_edu compiled"], rates["transformers"],
                                      strict=True)
            ),
            # tokens a 180-second run gets compiled, as seconds of an eager run
            "compiled_180s_equivalent_s": (180 - compile_s) * fast / eager,
        }
    return {
        "config": name,
        "model": {k: v for k, v in args.to_dict().items() if v is not None},
        "batch": batch,
        "seq_len": seq,
        "tokens_per_s": {k: statistics.median(v) for k, v in rates.items()},
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "repeats": repeats,
        "steps_per_repeat": steps,
        "device": device,
        "bf16": bf16,
        **extra,
    }


def main() -> None:
    """Measure every configuration and print a table (and optionally write JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (for a GPU)")
    parser.add_argument("--configs", nargs="*", default=["tiny", "small"], choices=list(CONFIGS),
                        help="configurations to time (none: only --matmuls)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--profile", action="store_true",
                        help="also print where a step's time goes (matmul, attention, the rest)")
    parser.add_argument("--matmuls", action="store_true",
                        help="also time the tiny preset's projections fused and at other widths")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    if opts.compile:  # an empty cache, so the compile time is a learner's first run's
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    import transformers

    where = (torch.cuda.get_device_name() if opts.device.startswith("cuda")
             else f"{platform.machine()}, {opts.threads} threads")
    print(f"# torch {torch.__version__}, transformers {transformers.__version__}, {where}"
          f"{', bf16 autocast' if opts.bf16 else ', float32'}")
    print("| config | llama_edu tokens/s | transformers tokens/s | ratio (median, min-max) |")
    print("|---|---:|---:|---:|")
    results = []
    for name in opts.configs:
        row = measure(name, opts.repeats, opts.steps, opts.compile, opts.profile, opts.device,
                      opts.bf16)
        results.append(row)
        t = row["tokens_per_s"]
        print(f"| {name} | {t['llama_edu']:,.0f} | {t['transformers']:,.0f} | "
              f"{row['ratio_median']:.2f} ({row['ratio_min']:.2f}-{row['ratio_max']:.2f}) |",
              flush=True)
        for model, share in row.get("time_shares", {}).items():
            print(f"#   {name}, {model}: " + ", ".join(f"{k} {v:.0%}" for k, v in share.items()))
        if opts.compile:
            print(f"#   {name} under torch.compile: {t['llama_edu compiled']:,.0f} tokens/s "
                  f"(ratio {row['compiled_ratio_median']:.2f}) after {row['compile_s']:.1f} s "
                  f"of compiling; a 180 s run compiled gets the tokens of "
                  f"{row['compiled_180s_equivalent_s']:.0f} s eager", flush=True)
    if opts.matmuls:
        matmul_sizes(opts.repeats * 3)
    if opts.json:
        meta = {"torch": torch.__version__, "transformers": transformers.__version__,
                "machine": where, "threads": opts.threads}
        opts.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
