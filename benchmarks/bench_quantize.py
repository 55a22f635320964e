"""What quantizing the shipped model costs: bits per character against bits per weight.

Usage:
    python benchmarks/bench_quantize.py                              # table
    python benchmarks/bench_quantize.py --figure docs/figures/quantize.png --json runs.json

Every nn.Linear of the shipped model (the output layer included; the embedding table, a lookup,
stays in float32) goes through each format of `llama_edu.quantize` and back, and the model
computes with those weights. Measured per format: bits per weight of the quantized matrices,
their bytes, the excess bits per character over the entropy floor on --stories held-out true
stories, the share of --samples stories sampled at temperature 1 that TinyTales accepts, and
how often greedy decoding agrees with float32's: the share of --prompts continuations of
--tokens tokens that are identical, and the share of tokens generated before the first
difference.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

try:
    import llama_edu  # noqa: F401
except ImportError:  # running from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from llama_edu.generate import generate
from llama_edu.posttrain import sample_stories, story_stats
from llama_edu.quantize import BITS_PER_WEIGHT, FORMATS, quantize_model
from llama_edu.tinytales import TinyTales
from llama_edu.train import load_pretrained, story_bits_per_char

EVAL_SEED = 12345  # held-out stories and the floor, as in train.tales_report


def draw(rows: list[dict], floor: float, path: Path) -> None:
    """Two panels against bits per weight: excess over the floor, greedy agreement with fp32."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    xs = [r["bits_per_weight"] for r in rows]
    offsets = {"int8": (-6, 2, "right"), "q8_0": (6, -10, "left")}
    for ax, key, scale, label in (
        (left, "excess", 1, "excess over the floor (bits/char)"),
        (right, "identical", 100, "greedy runs identical to fp32 (%)"),
    ):
        ys = [r[key] * scale for r in rows]
        ax.plot(xs, ys, "o")
        for r, y in zip(rows, ys, strict=True):
            dx, dy, ha = offsets.get(r["format"], (4, 6, "left"))
            ax.annotate(r["format"], (r["bits_per_weight"], y), textcoords="offset points",
                        xytext=(dx, dy), ha=ha)
        ax.set(xlabel="bits per weight of the matrices", ylabel=label, ylim=(0, max(ys) * 1.15),
               xlim=(0, 34))
        ax.grid(alpha=0.3)
    fig.suptitle(f"The shipped model quantized: the cost of each format (floor {floor:.3f} "
                 "bits/char)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"drew {path}")


def main() -> None:
    """Quantize, measure, print the table (and draw the figure)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stories", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--replot", type=Path, help="draw --figure from this JSON; measure nothing")
    opts = parser.parse_args()
    if opts.replot:
        saved = json.loads(opts.replot.read_text())
        draw(saved["rows"], saved["floor"], opts.figure or Path("quantize.png"))
        return
    torch.set_num_threads(opts.threads)
    model, tok = load_pretrained()
    model.eval()
    tales = TinyTales()
    held_out = tales.sample(opts.stories, seed=EVAL_SEED)
    floor = tales.entropy_floor(n=opts.stories, seed=EVAL_SEED).bits_per_char
    texts = [s.text for s in held_out]
    prompts = [tok.encode(s.text.split(". ")[0] + ".", bos=True)
               for s in tales.sample(opts.prompts, seed=4242)]
    reference = [generate(model, p, opts.tokens) for p in prompts]
    matrices = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    rows = []
    for fmt in ("fp32", *FORMATS):
        q = model if fmt == "fp32" else quantize_model(model, fmt)
        greedy = reference if fmt == "fp32" else [generate(q, p, opts.tokens) for p in prompts]
        same_prefix = []
        for a, b in zip(greedy, reference, strict=True):
            n = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(b))
            same_prefix.append(n / len(b))
        stats = story_stats(sample_stories(q, tok, opts.samples, seed=1), tales)
        row = {"format": fmt, "bits_per_weight": BITS_PER_WEIGHT[fmt],
               "matrix_bytes": matrices * BITS_PER_WEIGHT[fmt] / 8,
               "excess": story_bits_per_char(q, tok, texts) - floor,
               "valid": stats["valid"],
               "identical": sum(a == b for a, b in zip(greedy, reference, strict=True))
               / len(prompts),
               "agreeing_prefix": sum(same_prefix) / len(same_prefix)}  # fmt: skip
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                          for k, v in row.items()}), flush=True)  # fmt: skip
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    lines = ["| format | bits per weight | matrices (KiB) | excess over floor (bits/char) "
             "| valid stories (T = 1) | greedy continuations identical | tokens before the "
             "first difference |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        kib = r["matrix_bytes"] / 1024
        lines.append(f"| {r['format']} | {r['bits_per_weight']:g} | {kib:,.0f} "
                     f"| {r['excess']:.4f} | {r['valid']:.1%} | {r['identical']:.0%} "
                     f"| {r['agreeing_prefix']:.0%} |")  # fmt: skip
    print("\n".join(lines))
    print(f"\nFloor {floor:.4f} bits/char on {opts.stories} held-out stories; {opts.samples} "
          f"samples; {opts.prompts} prompts x {opts.tokens} greedy tokens. "
          f"`python benchmarks/bench_quantize.py {' '.join(sys.argv[1:])}` on {machine}.")
    if opts.json:
        opts.json.write_text(json.dumps({"machine": machine, "floor": floor, "rows": rows},
                                        indent=1))  # fmt: skip
    if opts.figure:
        draw(rows, floor, opts.figure)


if __name__ == "__main__":
    main()
