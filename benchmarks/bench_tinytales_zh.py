"""The tiny model trained on Chinese TinyTales with chapter 09's recipe: the gap it closes.

Usage:
    python benchmarks/bench_tinytales_zh.py    # writes benchmarks/results/tinytales_zh.json
    python benchmarks/bench_tinytales_zh.py --json out.json --samples 200

The run is `recommended_config("cpu")` (the run chapter 09 and the README's English figure use:
the `tiny` preset, 600 steps of 32 windows of 128 tokens, AdamW at a peak learning rate of 3e-3,
20,000 training stories, seed 0) with `corpus="tiny-tales-zh"` and `vocab_size=1024`: the
Chinese stories use about 300 different characters, and the tokenizer gives each a piece of its
own besides the 259 fixed ids, which 512 cannot hold. The comparison is by steps, not minutes, so
that it is fair on a shared machine; wall-clock time is recorded but is noisy.

Then `tales_report(..., tales=TinyTalesZh())` on 1,000 held-out stories, exactly as for the
English figure: unigram and bigram baselines, the entropy floor, the model's bits per character,
its excess over the floor, the share of the bigram-to-floor gap closed
((bigram - model) / (bigram - floor), the definition of `llama_edu.loss_report` and
`train.excess_over_floor`), and the share of 200 stories sampled at temperature 1 that
`TinyTalesZh.is_valid` accepts. Tokens per character are counted on the held-out stories (each
story's tokens plus its end token, over its characters plus its newline), for this run's tokenizer
and for the English run's tokenizer on English stories.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

try:
    import llama_edu  # noqa: F401
except ImportError:  # running from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from llama_edu.device import get_device
from llama_edu.generate import generate
from llama_edu.model import Llama
from llama_edu.tinytales import TinyTales
from llama_edu.tinytales_zh import TinyTalesZh
from llama_edu.tokenizer import SentencePieceTokenizer, train_sentencepiece
from llama_edu.train import TINY_TALES_ZH_VOCAB_SIZE, recommended_config, tales_report, train

RESULT = Path(__file__).resolve().parent / "results" / "tinytales_zh.json"


def tokens_per_char(tokenizer: SentencePieceTokenizer, texts: list[str]) -> float:
    """Tokens per character of whole stories: each story's tokens and end token per len + 1."""
    tokens = sum(len(tokenizer.encode(t, eos=True)) for t in texts)
    return tokens / sum(len(t) + 1 for t in texts)


def english_tokens_per_char(n_stories: int, vocab_size: int, texts: list[str]) -> float:
    """Tokens per character of the English run's tokenizer (trained as prepare_corpus does)."""
    train_texts = [s.text for s in TinyTales().sample(n_stories, seed=0)]
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = train_sentencepiece("\n".join(train_texts), vocab_size, folder)
        return tokens_per_char(tokenizer, texts)


def sample_reasons(model: Llama, tokenizer: SentencePieceTokenizer, tales: TinyTalesZh,
                   n: int, seed: int = 12345) -> tuple[float, list[dict[str, str]]]:
    """The valid share of n stories sampled at temperature 1, as tales_report draws them, and
    each sampled story with is_valid's reason."""
    generator = torch.Generator().manual_seed(seed)
    limit = min(model.args.max_seq_len - 1, 200)
    rows = []
    for _ in range(n):
        new = generate(model, [tokenizer.bos_id], limit, temperature=1.0,
                       stop_ids=[tokenizer.eos_id], generator=generator)
        text = tokenizer.decode([t for t in new if t != tokenizer.eos_id])
        rows.append({"text": text, "reason": tales.is_valid(text).reason})
    return sum(not r["reason"] for r in rows) / n, rows


def main() -> None:
    """Train, report, print a table and write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=RESULT)
    args = parser.parse_args()

    device = get_device()
    english = recommended_config("cpu")  # the README's English figure, on any device
    cfg = dataclasses.replace(english, corpus="tiny-tales-zh", vocab_size=TINY_TALES_ZH_VOCAB_SIZE,
                              seed=args.seed)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = train(cfg, out, progress=False)
        seconds = time.perf_counter() - start
    last = next(r for r in reversed(result.history) if "val_bpc" in r)
    tales = TinyTalesZh()
    report = tales_report(result.model, result.tokenizer, n_eval=1000, n_samples=args.samples,
                          tales=tales)
    valid, samples = sample_reasons(result.model, result.tokenizer, tales, args.samples)
    kinds = Counter(re.sub(r"^第\d+句[：]?", "", r["reason"]).split("，")[0].split("：")[0][:12]
                    for r in samples if r["reason"])
    held_out = [s.text for s in tales.sample(1000, seed=12345)]  # tales_report's stories
    held_out_en = [s.text for s in TinyTales().sample(1000, seed=12345)]
    alphabet = Counter("".join(s.text for s in tales.sample(cfg.n_stories, seed=cfg.seed)))
    record = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
                   f"torch {torch.__version__}, device {device.type}",
        "config": dataclasses.asdict(cfg),
        "parameters": result.model.num_params(),
        "steps": result.step,
        "stopped": result.stopped,
        "tokens_seen": result.step * cfg.batch_size * cfg.grad_accum * cfg.seq_len,
        "wall_seconds": seconds,
        "characters_in_training_stories": len(alphabet),
        "mean_story_chars": sum(len(t) for t in held_out) / len(held_out),
        "tokens_per_char": tokens_per_char(result.tokenizer, held_out),
        "english_tokens_per_char": english_tokens_per_char(english.n_stories, english.vocab_size,
                                                           held_out_en),
        "unigram_bpc": report.unigram,
        "bigram_bpc": report.bigram,
        "floor_bpc": report.floor,
        "floor_stderr": report.floor_stderr,
        "model_bpc": report.model,
        "excess_bpc": report.model - report.floor,
        "gap_closed": report.gap_closed,
        "valid_fraction": report.valid_fraction,
        "n_samples": report.n_samples,
        "valid_fraction_resampled": valid,  # the same draws again: equals valid_fraction
        "invalid_reason_starts": dict(kinds.most_common()),
        "samples": samples,
        "last_eval": {k: last[k] for k in ("step", "val_bpc", "floor_bpc", "bigram_bpc",
                                           "val_excess_bpc", "gap_closed") if k in last},
    }
    print(f"# {record['machine']}; recommended_config('cpu') on tiny-tales-zh, vocab "
          f"{cfg.vocab_size}, seed {cfg.seed}")
    print("| steps | model bits/char | floor | unigram | bigram | excess | gap closed | valid "
          "stories | tokens/char |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {result.step} | {report.model:.4f} | {report.floor:.4f} ± {report.floor_stderr:.4f} "
          f"| {report.unigram:.4f} | {report.bigram:.4f} | {report.model - report.floor:.4f} | "
          f"{report.gap_closed:.1%} | {report.valid_fraction:.1%} of {report.n_samples} | "
          f"{record['tokens_per_char']:.3f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
