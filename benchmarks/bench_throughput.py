"""Training tokens per second: llama_edu's Llama against transformers' LlamaForCausalLM.

Usage:  python benchmarks/bench_throughput.py [--threads 2] [--repeats 7] [--steps 5]
        python benchmarks/bench_throughput.py --json benchmarks/results/throughput.json

Both models are built from the same ModelArgs (transformers' through `interop.hf_config_kwargs`)
and carry the same weights. A step is what `llama_edu.train` does: forward on a batch of random
token ids, cross-entropy against the next ids, backward, gradient clipping and AdamW. The two
models take turns in one process (one timed block of --steps steps each per repeat), so a busy
moment of the machine falls on both; the ratio is the median over repeats of the per-repeat
ratio. Configurations: `tiny` (the workbook's CPU run: batch 32 x 128 tokens) and `small`
(dim 256, 6 layers, 8 heads, 4 key/value heads, vocabulary 2,048, batch 16 x 256).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
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
}


def build_pair(args: ModelArgs) -> tuple[torch.nn.Module, torch.nn.Module]:
    """llama_edu's Llama and transformers' LlamaForCausalLM with the same weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    ours = Llama(args)
    config = LlamaConfig(**hf_config_kwargs(args))
    config._attn_implementation = "sdpa"
    theirs = LlamaForCausalLM(config)
    theirs.load_state_dict(meta_to_hf(ours.state_dict(), args), strict=False)
    return ours, theirs


def make_step(model: torch.nn.Module, hf: bool) -> callable:
    """One training step (forward, loss, backward, clip, AdamW) on a fixed random batch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95),
                                  weight_decay=0.1)

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        logits = model(x).logits if hf else model(x)  # (batch, seq, vocab)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def measure(name: str, repeats: int, steps: int) -> dict:
    """Tokens per second of both models on one configuration, taking turns."""
    args, batch, seq = CONFIGS[name]
    ours, theirs = build_pair(args)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, args.vocab_size, (batch, seq + 1), generator=gen)
    x, y = ids[:, :-1], ids[:, 1:]
    runs = {"llama_edu": make_step(ours, hf=False), "transformers": make_step(theirs, hf=True)}
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
    }


def main() -> None:
    """Measure every configuration and print a table (and optionally write JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    import transformers

    print(f"# torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{platform.machine()}, {opts.threads} threads")
    print("| config | llama_edu tokens/s | transformers tokens/s | ratio (median, min-max) |")
    print("|---|---:|---:|---:|")
    results = []
    for name in opts.configs:
        row = measure(name, opts.repeats, opts.steps)
        results.append(row)
        t = row["tokens_per_s"]
        print(f"| {name} | {t['llama_edu']:,.0f} | {t['transformers']:,.0f} | "
              f"{row['ratio_median']:.2f} ({row['ratio_min']:.2f}-{row['ratio_max']:.2f}) |",
              flush=True)
    if opts.json:
        meta = {"torch": torch.__version__, "transformers": transformers.__version__,
                "machine": platform.machine(), "threads": opts.threads}
        opts.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
