"""Benchmark for llama_edu.data: TinyTales generation speed, its entropy floor, and how far the
count-based character models are above it. Run: python benchmarks/bench_data.py"""

from __future__ import annotations

import sys
import time
from pathlib import Path

try:
    import llama_edu  # noqa: F401
except ImportError:  # running from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llama_edu.data import bigram_bits_per_char, unigram_bits_per_char
from llama_edu.tinytales import TinyTales

N_GENERATE = 10_000
N_TRAIN = 20_000
N_HELD_OUT, HELD_OUT_SEED = 2_000, 12_345


def best_of(repeats: int, fn) -> float:
    """Fastest wall-clock time of fn() over several runs, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    """Print the timings and bits-per-character figures."""
    tales = TinyTales()
    gen = best_of(3, lambda: tales.sample(N_GENERATE, seed=0))
    print(f"generate {N_GENERATE} stories with log-probabilities: {gen:.3f} s (best of 3)")
    held_out = tales.sample(N_HELD_OUT, seed=HELD_OUT_SEED)
    parse = best_of(3, lambda: [tales.log_prob(s.text) for s in held_out])
    print(f"re-parse {N_HELD_OUT} stories with log_prob: {parse:.3f} s (best of 3)")

    floor = tales.entropy_floor(n=N_HELD_OUT, seed=HELD_OUT_SEED)
    train = [s.text for s in tales.sample(N_TRAIN, seed=1)]
    test = [s.text for s in held_out]
    unigram = unigram_bits_per_char(train, test)
    bigram = bigram_bits_per_char(train, test)
    f = floor.bits_per_char
    print(f"characters: story text + 1 newline per story; train {N_TRAIN} stories (seed 1), "
          f"held out {N_HELD_OUT} (seed {HELD_OUT_SEED})")
    print(f"entropy floor:          {f:.4f} ± {floor.stderr:.4f} bits/char (delta-method SE)")
    print(f"unigram (add-1):        {unigram:.4f} bits/char")
    print(f"bigram (add-1):         {bigram:.4f} bits/char")
    print(f"(bigram - floor)/floor: {(bigram - f) / f:.2f}  (required >= 0.30)")


if __name__ == "__main__":
    main()
