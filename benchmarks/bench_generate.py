"""Greedy generation on the CPU with the KV cache vs recomputing the whole sequence every step.

Usage:  python benchmarks/bench_generate.py [--new-tokens 256 ...] [--prompt-len 8] [--repeats 3]

The tiny preset's max_seq_len is raised to 512 (or more, for longer runs) so prompt + new fits.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import torch

from llama_edu.generate import generate
from llama_edu.model import Llama, ModelArgs


def best_time(fn: Callable[[], list[int]], repeats: int) -> tuple[float, list[int]]:
    """Best wall time of `repeats` calls after one warm-up call, and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    """Print a markdown row: both timings, the speed-up, and whether the tokens agree."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[256])
    parser.add_argument("--prompt-len", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    max_seq_len = max(512, args.prompt_len + max(args.new_tokens))
    model_args = ModelArgs.from_name("tiny", max_seq_len=max_seq_len)
    model = Llama(model_args).eval()
    prompt = torch.randint(0, model_args.vocab_size, (args.prompt_len,)).tolist()

    cpu = platform.processor() or platform.machine()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}")
    print(
        f"# preset tiny (max_seq_len {max_seq_len}), float32, greedy, prompt {args.prompt_len} "
        f"tokens, best of {args.repeats}"
    )
    print("| new tokens | with cache (s) | without cache (s) | speed-up | tokens identical |")
    print("|---:|---:|---:|---:|:---:|")
    for n in args.new_tokens:
        cached_s, cached = best_time(lambda n=n: generate(model, prompt, n), args.repeats)
        full_s, full = best_time(
            lambda n=n: generate(model, prompt, n, use_cache=False), args.repeats
        )
        assert cached == full, "the cache changed the greedy tokens"
        print(f"| {n} | {cached_s:.3f} | {full_s:.3f} | {full_s / cached_s:.1f}x | yes |")


if __name__ == "__main__":
    main()
