"""Give workbook notebooks nbgrader's cell metadata (answer cells, hidden test cells with points).

    python tools/add_nbgrader_metadata.py                      # every notebooks/NN_*.ipynb
    python tools/add_nbgrader_metadata.py notebooks/04_attention.ipynb
    python tools/add_nbgrader_metadata.py --check              # exit 1 if any would change

Each notebook is rewritten in place (atomically) only when something changes. A new test cell
has never run: re-execute the notebook afterwards (tools/run_notebooks.py) so that its outputs
and execution counts are those of one top-to-bottom run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from llama_edu import classroom
from llama_edu.nbgrader_cells import NbgraderMetadataError, add_nbgrader_metadata, total_points


def main(argv: list[str] | None = None) -> int:
    """Apply add_nbgrader_metadata to the given notebooks (default: the workbook's)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/NN_*.ipynb")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(classroom.default_notebook_dir().glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        print("no notebooks given and none in notebooks/", file=sys.stderr)
        return 1
    stale = failed = 0
    for path in paths:
        try:
            nb = nbformat.read(path, as_version=4)
            new = add_nbgrader_metadata(nb, name=path.name)
            nbformat.validate(new)
        except (OSError, ValueError, nbformat.ValidationError) as exc:
            # NbgraderMetadataError lists every cell to fix
            kind = "" if isinstance(exc, NbgraderMetadataError) else f"{type(exc).__name__}: "
            print(f"{path}: {kind}{exc}", file=sys.stderr)
            failed += 1
            continue
        changed = new != nb
        stale += changed
        points = total_points(new)
        if changed and not args.check:
            classroom._write_atomic(new, path)
        state = ("would change" if args.check else "updated") if changed else "up to date"
        print(f"{path}: {state} ({points:g} points)")
    if failed:
        return 2
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
