"""What a student version must show after a run, shared by the kernel test and the browser test.

CI runs the student versions once, in JupyterLab (tests/ui); where no browser is installed,
tests/test_classroom.py runs them in a plain kernel instead. Both judge the run here.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from llama_edu import classroom

CHROMIUM = Path("/usr/bin/chromium")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python Playwright is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


def student_run_problems(nb: nbformat.NotebookNode, name: str) -> list[str]:
    """What is wrong with a student version after a run: empty when all is as it should be."""
    problems = [
        f"{name}, cell {i}: {o.ename}: {o.evalue}"
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    exercise_cells = [
        (i, c)
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and classroom.STUB_MESSAGE in c.source
    ]
    if not exercise_cells:
        problems.append(f"{name} has no exercises (no cell raises {classroom.STUB_MESSAGE!r})")
    for i, cell in exercise_cells:
        text = "".join(o.get("text", "") for o in cell.outputs)
        if "not implemented yet" not in text:
            problems.append(
                f"{name}, cell {i}: the unsolved exercise's check did not say "
                f"'not implemented yet'; it printed {text[-300:]!r}"
            )
        if "passed" in text:
            problems.append(
                f"{name}, cell {i}: an unsolved exercise's check passed: {text[-300:]!r}"
            )
    # Where the notebook goes on with an exercise's result, it takes the library's and says so.
    choosing = [c for c in nb.cells if c.cell_type == "code" and "checks.choose(" in c.source]
    chosen = "".join(o.get("text", "") for c in choosing for o in c.outputs)
    if "Using your" in chosen:
        problems.append(f"{name}: checks.choose took an unsolved exercise's function")
    if choosing and "Using the library's" not in chosen:
        problems.append(f"{name}: checks.choose did not say it uses the library's version")
    return problems
