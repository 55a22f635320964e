"""Written-out attention vs PyTorch's fused SDPA on the CPU, causal, at growing sequence lengths.

Usage:  python benchmarks/bench_attention.py [--heads 8] [--head-dim 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from llama_edu.attention import attention, causal_mask, sdpa_attention


def best_time(fn, repeats: int) -> float:
    """Best wall time of `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    """Print a markdown table of timings and speed-ups."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    cpu = platform.processor() or platform.machine()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}")
    print(f"# batch 1, {args.heads} heads, head_dim {args.head_dim}, float32, causal mask")
    print("| seq_len | written out (ms) | SDPA (ms) | speed-up | max abs difference |")
    print("|---:|---:|---:|---:|---:|")
    with torch.no_grad():
        for seq in (128, 256, 512, 1024, 2048):
            q, k, v = (torch.randn(1, args.heads, seq, args.head_dim) for _ in range(3))
            mask = causal_mask(seq)
            inputs = (q, k, v, mask)
            slow = best_time(lambda inputs=inputs: attention(*inputs), args.repeats)
            fast = best_time(lambda inputs=inputs: sdpa_attention(*inputs), args.repeats)
            diff = (attention(q, k, v, mask) - sdpa_attention(q, k, v, mask)).abs().max().item()
            print(
                f"| {seq} | {slow * 1e3:.1f} | {fast * 1e3:.1f} | {slow / fast:.1f}x | {diff:.1e} |"
            )


if __name__ == "__main__":
    main()
