"""Keep the message catalogs in step with the messages in the code.

    python tools/make_messages.py              # add new templates (empty), drop removed ones
    python tools/make_messages.py --check      # exit 1 if a template lacks a translation

Each module whose messages are covered (llama_edu.messages.SOURCES) has one catalog file per
language, llama_edu/assets/messages/<lang>/<module>.json: {English template: translation}.
A template whose English changes becomes a new, empty entry; its old translation is printed so
that the translator can revise it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llama_edu.messages import CATALOG_DIR, catalog_problems, source_templates  # noqa: E402
from llama_edu.runfiles import atomic_write_text  # noqa: E402


def update(lang: str) -> None:
    """Add empty entries for new templates and drop the ones no longer in the code."""
    folder = CATALOG_DIR / lang
    folder.mkdir(parents=True, exist_ok=True)
    for stem, templates in source_templates().items():
        path = folder / f"{stem}.json"
        old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        new = {t: old.get(t, "") for t in templates}
        for gone in set(old) - set(new):
            print(f"{path.name}: dropped {gone!r} (was {old[gone]!r})")
        if new != old or not path.is_file():
            atomic_write_text(path, json.dumps(new, ensure_ascii=False, indent=1) + "\n")
        empty = sum(not v for v in new.values())
        if empty:
            print(f"{path.relative_to(ROOT)}: {empty} of {len(new)} entries to translate")


def main() -> int:
    """Update the catalogs, or with --check report what is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lang", default="zh")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.check:
        found = catalog_problems(args.lang)
        print("\n".join(found) or "every message has a translation")
        return 1 if found else 0
    update(args.lang)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
