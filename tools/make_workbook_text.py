"""Build the shipped corpus of the workbook's prose (English and Chinese) from the translations.

    python tools/make_workbook_text.py            # writes llama_edu/assets/workbook_text.json.gz
    python tools/make_workbook_text.py --commit HEAD   # from the committed translations
    python tools/make_workbook_text.py --check    # exit 1 if the shipped text differs

The corpus is a snapshot: chapter 02 trains a tokenizer on it and stores the numbers, so it is
rebuilt on purpose only (then re-run notebooks/02_tokenization.ipynb and tools/make_edition.py).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llama_edu.workbook_text import (  # noqa: E402
    WORKBOOK_TEXT_FILE,
    build_workbook_text,
    read_workbook_text,
    write_workbook_text,
)


def committed_translations(commit: str, into: Path) -> tuple[Path, str]:
    """Extract translations/zh of `commit` into `into`; return the folder and the short hash."""
    short = subprocess.run(["git", "rev-parse", "--short", commit], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "archive", short, "translations/zh"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "translations" / "zh", short


def main(argv: list[str] | None = None) -> int:
    """Write (or check) the corpus file; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commit", help="use translations/zh of this git commit "
                        "(default: the working tree)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if the shipped text is not what the "
                        "translations give")
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if opts.commit:
            folder, short = committed_translations(opts.commit, Path(tmp))
            source = f"translations/zh at commit {short}"
        else:
            folder, source = ROOT / "translations" / "zh", "translations/zh (working tree)"
        data = build_workbook_text(folder, source=source)
    if opts.check:
        same = (WORKBOOK_TEXT_FILE.is_file()
                and read_workbook_text(WORKBOOK_TEXT_FILE)["chapters"] == data["chapters"])
        print("up to date" if same else f"{WORKBOOK_TEXT_FILE.relative_to(ROOT)} differs from "
              f"{source} (a snapshot may differ on purpose; see llama_edu/workbook_text.py)")
        return 0 if same else 1
    write_workbook_text(data, WORKBOOK_TEXT_FILE)
    cells = sum(len(c) for c in data["chapters"].values())
    size = WORKBOOK_TEXT_FILE.stat().st_size
    print(f"wrote {WORKBOOK_TEXT_FILE.relative_to(ROOT)} from {source}: "
          f"{len(data['chapters'])} chapters, {cells} cells, {size:,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
