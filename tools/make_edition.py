"""Build the translated edition of the workbook from the English notebooks and translation files.

    python tools/make_edition.py                  # notebooks_zh/ from translations/zh/*.json
    python tools/make_edition.py --template       # add entries to fill in for new or changed cells
    python tools/make_edition.py --check          # exit 1 if a built notebook is out of date
    python tools/make_edition.py notebooks/04_attention.ipynb ...

Code cells and outputs are copied from the English notebook, so the editions are identical in
everything but the markdown. A notebook whose translation misses or predates any markdown cell
is not built; the command names those cells. Translated notebooks live beside the English ones
at the same depth (notebooks_zh/), so that the code's relative paths (../runs, ../docs) hold.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llama_edu.runfiles import atomic_write_text  # noqa: E402
from llama_edu.translations import (  # noqa: E402
    LANGUAGES,
    build_edition,
    load_translations,
    stale_cells,
    template,
    write_translations,
)


def edition_dir(lang: str) -> Path:
    """Where the built notebooks of an edition go."""
    return ROOT / f"notebooks_{lang}"


def translation_file(lang: str, notebook: Path) -> Path:
    """The translation file of one English notebook."""
    return ROOT / "translations" / lang / f"{notebook.stem}.json"


def main(argv: list[str] | None = None) -> int:
    """Build (or check, or prepare templates for) the edition; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/NN_*.ipynb")
    parser.add_argument("--lang", default="zh", choices=sorted(LANGUAGES))
    parser.add_argument("--template", action="store_true",
                        help="write entries to fill in for new or changed cells; build nothing")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a built notebook is missing or out of date")
    opts = parser.parse_args(argv)
    paths = opts.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    out_dir = edition_dir(opts.lang)
    status = 0
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        tfile = translation_file(opts.lang, path)
        entries = load_translations(tfile)
        if opts.template:
            tfile.parent.mkdir(parents=True, exist_ok=True)
            write_translations(tfile, template(nb, entries))
            todo = len(stale_cells(nb, template(nb, entries)))
            print(f"{tfile.relative_to(ROOT)}: {todo} cell(s) to translate")
            continue
        if not entries:
            print(f"{path.name}: not translated yet (no {tfile.relative_to(ROOT)})")
            continue
        stale = stale_cells(nb, entries)
        if stale:
            print(f"{path.name}: not built, {len(stale)} cell(s) without a current translation:")
            for cell in stale:
                print(f"  {cell}")
            status = 1
            continue
        text = nbformat.writes(build_edition(nb, entries)) + "\n"
        target = out_dir / path.name
        if opts.check:
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                print(f"{target.relative_to(ROOT)} is out of date: run tools/make_edition.py")
                status = 1
            continue
        out_dir.mkdir(exist_ok=True)
        atomic_write_text(target, text)
        print(f"wrote {target.relative_to(ROOT)}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
