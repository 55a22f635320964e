"""The ablation lab at full length: every variant of chapter 12, several seeds, one table.

Usage:
    python benchmarks/bench_ablations.py                      # 600 steps, seeds 0 1 2
    python benchmarks/bench_ablations.py --steps 300 --seeds 0   # the notebook's length
    python benchmarks/bench_ablations.py --readme README.md   # also replace the README's table

Each run trains `llama_edu.ablation.LAB_MODEL` (with one design choice changed) on the same
TinyTales text and reports held-out bits per character minus the exact entropy floor. The table
gives the mean and the min..max over seeds; a difference from the baseline no larger than the
larger of the two seed spreads is called "within noise". Results also go to a JSON file (--json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import re
import sys
import time
from pathlib import Path

try:
    import llama_edu  # noqa: F401
except ImportError:  # running from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from llama_edu import ablation

START, END = "<!-- ablation-table:start -->", "<!-- ablation-table:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--stories", type=int, default=10_000)
    parser.add_argument("--json", type=Path, help="write every run's result here")
    parser.add_argument("--readme", type=Path, help=f"replace the text between {START} and {END}")
    opts = parser.parse_args()

    start = time.perf_counter()
    data = ablation.lab_data(n_stories=opts.stories)
    print(f"floor {data.floor:.4f} ± {data.floor_stderr:.4f} bits/char, bigram {data.bigram:.4f}")

    def show(r: ablation.LabResult) -> None:
        print(f"{r.variant:24s} seed {r.seed}: excess {r.excess:.4f} bits/char, gap closed "
              f"{r.gap_closed:.1%}, {r.seconds:.0f} s", flush=True)  # fmt: skip

    results = ablation.run_lab(data, ablation.all_variants(), opts.steps, opts.seeds, show)
    minutes = (time.perf_counter() - start) / 60
    table = ablation.markdown_table(ablation.summarise(results))
    machine = (
        f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    command = "python benchmarks/bench_ablations.py " + " ".join(sys.argv[1:])
    footer = (
        f"\n\n{opts.steps} steps of {ablation.LAB_TRAIN['batch_size']} x "
        f"{ablation.LAB_TRAIN['seq_len']} tokens per run, seeds {opts.seeds}, floor "
        f"{data.floor:.4f} bits/char on {len(data.val_texts)} held-out stories; "
        f"`{command.strip()}` on {machine}: {minutes:.0f} min."
    )
    print(table + footer)
    if opts.json:
        opts.json.write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1))
    if opts.readme:
        text = opts.readme.read_text()
        pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
        if not pattern.search(text):
            sys.exit(f"{opts.readme} has no {START} ... {END} markers; put them where the "
                     "table goes.")
        new = pattern.sub(lambda _: f"{START}\n{table}{footer}\n{END}", text)
        tmp = opts.readme.with_suffix(".tmp")
        tmp.write_text(new)
        tmp.replace(opts.readme)
        print(f"wrote the table into {opts.readme}")


if __name__ == "__main__":
    main()
