"""Time tokenizer training: SentencePiece (4k vocab, 1 MB), teaching BPE (512 merges, 100 KB).

Run with ``python benchmarks/bench_tokenizer.py``. The text comes from CPython's own pydoc
topics, stretched to 1 MB with reordered, word-reversed and case-swapped copies so that the
extra megabyte is not one text repeated verbatim.
"""

from __future__ import annotations

import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from pydoc_data.topics import topics

import sentencepiece

# Lets the script run from a plain checkout, without `pip install -e .`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llama_edu.tokenizer import BPETokenizer, train_sentencepiece  # noqa: E402

ONE_MB = 1_000_000


def corpus(size: int) -> str:
    """Pydoc text, extended with varied copies until it is `size` characters long."""
    base = "\n".join(topics[key] for key in sorted(topics))
    lines = base.splitlines()
    rng = random.Random(0)
    parts = [base]
    variants = (
        lambda line: " ".join(reversed(line.split())),
        str.swapcase,
        lambda line: line,
    )
    k = 0
    while sum(len(p) + 1 for p in parts) < size:
        shuffled = lines[:]
        rng.shuffle(shuffled)
        parts.append("\n".join(map(variants[k % len(variants)], shuffled)))
        k += 1
    return "\n".join(parts)[:size]


def best_of(runs: int, fn: Callable[[], object]) -> tuple[float, list[float]]:
    """Run `fn` `runs` times; return the fastest wall-clock time and all of them."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), times


def fmt(times: list[float]) -> str:
    return ", ".join(f"{t:.3f}" for t in times)


def main() -> None:
    print(
        f"python {platform.python_version()}, sentencepiece {sentencepiece.__version__}, "
        f"{os.cpu_count()} CPUs"
    )
    text_1mb = corpus(ONE_MB)
    text_100kb = text_1mb[:100_000]

    with tempfile.TemporaryDirectory() as tmp:
        best, times = best_of(3, lambda: train_sentencepiece(text_1mb, 4000, tmp))
        print(
            f"(a) SentencePiece, vocab 4000, {len(text_1mb.encode()) / 1e6:.2f} MB: "
            f"best {best:.3f} s (runs: {fmt(times)}; target < 2 s; all sentences, 1 thread)"
        )

    best, times = best_of(3, lambda: BPETokenizer().train(text_100kb, 256 + 512))
    print(
        f"(b) teaching BPE, 512 merges, {len(text_100kb.encode()) / 1e3:.0f} KB: "
        f"best {best:.3f} s (runs: {fmt(times)}; target <= 30 s)"
    )
    best, times = best_of(3, lambda: BPETokenizer(pre_split=True).train(text_100kb, 256 + 512))
    print(f"    same with pre_split=True: best {best:.3f} s (runs: {fmt(times)})")

    tok = BPETokenizer().train(text_100kb, 256 + 512)
    best, _ = best_of(3, lambda: tok.encode(text_100kb))
    print(
        f"    encoding those 100 KB with the 768-id vocabulary: best {best:.3f} s, "
        f"{tok.tokens_per_char(text_100kb):.3f} tokens per character"
    )


if __name__ == "__main__":
    main()
