"""Train the TinyTales model that ships with the workbook, copy it into the package, measure it.

Usage:  python tools/make_pretrained.py [--max-steps 3000] [--run runs/pretrained]

It runs the project's own CLI (the command is printed), then copies what chapters 10-12 need
(config, tokenizer, weights, training history; not the optimiser state) to
llama_edu/assets/tinytales/, and prints the TinyTales report of the shipped copy.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "llama_edu" / "assets" / "tinytales"
FILES = ["config.json", "tokenizer.model", "checkpoint/model.safetensors", "checkpoint/state.json"]


def main() -> int:
    """Train, copy atomically into the package, and report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--run", default="runs/pretrained")
    parser.add_argument("--skip-training", action="store_true", help="copy an existing run")
    args = parser.parse_args()
    run = ROOT / args.run
    command = [
        "llama-edu", "train", "--corpus", "tiny-tales", "--preset", "tiny",
        "--max-steps", str(args.max_steps), "--seed", "0", "--out", args.run, "--overwrite",
    ]  # fmt: skip
    if not args.skip_training:
        print("$", shlex.join(command), flush=True)
        subprocess.run(command, cwd=ROOT, check=True)
    staging = Path(tempfile.mkdtemp(dir=TARGET.parent, prefix=".tinytales."))
    for name in FILES:
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run / name, staging / name)
    for path in [staging, *staging.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # mkdtemp makes a private folder
    old = TARGET.with_name(".tinytales.old")
    shutil.rmtree(old, ignore_errors=True)
    if TARGET.exists():
        TARGET.rename(old)
    staging.rename(TARGET)
    shutil.rmtree(old, ignore_errors=True)
    size = sum(p.stat().st_size for p in TARGET.rglob("*") if p.is_file())
    print(f"copied to {TARGET.relative_to(ROOT)}: {size / 1e6:.2f} MB")

    from llama_edu.train import load_pretrained, tales_report

    model, tokenizer = load_pretrained()
    report = tales_report(model, tokenizer, n_eval=1000, n_samples=200)
    print(report)
    print(f"gap closed {report.gap_closed:.1%}, valid {report.valid_fraction:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
