"""Regenerate llama_edu/assets/exercises.json (chapter -> exercise checks) from notebooks/.

The grader uses that list when a submission's file name matches no instructor notebook (a
renamed file, or a package installed without notebooks/). Run after adding or renaming an
exercise: `python tools/make_exercise_list.py`; tests/test_grading.py fails while it is stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llama_edu import classroom


def main() -> int:
    """Write the list read from the workbook's notebooks/ to the package's assets folder."""
    chapters = classroom.exercise_list(classroom.default_notebook_dir())
    if not chapters:
        print(f"no NN_*.ipynb notebooks in {classroom.default_notebook_dir()}", file=sys.stderr)
        return 1
    text = json.dumps(chapters, indent=1) + "\n"
    Path(classroom.EXERCISE_LIST).write_text(text, encoding="utf-8")
    print(f"wrote {len(chapters)} chapters to {classroom.EXERCISE_LIST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
