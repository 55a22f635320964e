"""Time and memory budgets: every notebook executed in a fresh kernel, as a learner would run it.

Usage:
    python benchmarks/notebooks.py                    # all notebooks, the machine's threads
    python benchmarks/notebooks.py --threads 1        # like Binder (OMP_NUM_THREADS=1)
    python benchmarks/notebooks.py notebooks/07_normalization.ipynb

For each notebook it records the wall time of a top-to-bottom run and the peak resident memory
of the kernel process (its own getrusage maximum, read in the same kernel after the last cell).
The notebooks are not modified. Targets on a 2-core CPU: at most 90 s per notebook (09_training,
12_ablation_lab and 14_post_training at most 240 s), at most 12 minutes in all, at most 1.5 GB
peak memory per kernel. The wall time counts the cells only, not the kernel's start.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

ROOT = Path(__file__).resolve().parent.parent
LIMIT_S = {"09_training": 240.0, "12_ablation_lab": 240.0, "14_post_training": 240.0}
DEFAULT_LIMIT_S, TOTAL_LIMIT_S, MEMORY_LIMIT_MB = 90.0, 720.0, 1536.0
PEAK_CELL = "import resource\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"


def measure(path: Path) -> tuple[float, float]:
    """Run one notebook in a fresh kernel; return (wall seconds, peak kernel memory in MB)."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=1200, kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )  # fmt: skip
    with client.setup_kernel():
        start = time.perf_counter()
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                client.execute_cell(cell, index)
        seconds = time.perf_counter() - start
        probe = new_code_cell(PEAK_CELL)
        nb.cells.append(probe)
        client.execute_cell(probe, len(nb.cells) - 1)
    peak_kb = int(probe.outputs[0]["text"].strip())  # Linux reports kilobytes
    return seconds, peak_kb / 1024


def main() -> int:
    """Measure the notebooks and print a markdown table with the targets."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--threads", type=int, help="set OMP_NUM_THREADS for the kernels")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.pop("MPLBACKEND", None)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    threads = os.environ.get("OMP_NUM_THREADS", f"all {os.cpu_count()} cores")
    print(f"# {platform.machine()}, {os.cpu_count()} cores, threads: {threads}, "
          f"Python {platform.python_version()}")
    print("| notebook | wall time (s) | target (s) | peak memory (MB) | within budget |")
    print("|---|---:|---:|---:|:---:|")
    total, all_ok = 0.0, True
    for path in paths:
        seconds, peak_mb = measure(path.resolve())
        limit = LIMIT_S.get(path.stem, DEFAULT_LIMIT_S)
        ok = seconds <= limit and peak_mb <= MEMORY_LIMIT_MB
        all_ok &= ok
        total += seconds
        print(f"| `{path.stem}` | {seconds:.1f} | {limit:.0f} | {peak_mb:.0f} | "
              f"{'yes' if ok else '**no**'} |", flush=True)
    ok = total <= TOTAL_LIMIT_S
    print(f"| **all** | {total:.1f} | {TOTAL_LIMIT_S:.0f} | | {'yes' if ok else '**no**'} |")
    return 0 if (all_ok and ok) else 1


if __name__ == "__main__":
    sys.exit(main())
