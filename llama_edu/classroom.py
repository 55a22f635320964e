"""The classroom: student versions (solutions become stubs) and grading of submitted notebooks."""

from __future__ import annotations

import copy
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB_MESSAGE = "Exercise: replace this line with your solution"


class MarkerError(ValueError):
    """Solution markers in a notebook are unbalanced or nested."""


def strip_solutions(source: str, where: str = "cell") -> str:
    """Replace every solution block in one cell's source with an indented NotImplementedError."""
    lines = source.split("\n")
    out: list[str] = []
    inside_since: int | None = None
    for number, line in enumerate(lines, start=1):
        marker = line.strip()
        if marker.startswith(BEGIN):
            if inside_since is not None:
                raise MarkerError(
                    f"{where}, line {number}: '{BEGIN}' inside the solution block opened on line "
                    f"{inside_since}; solution blocks cannot be nested. Close the first block "
                    f"with '{END}' before opening another."
                )
            inside_since = number
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f'{indent}raise NotImplementedError("{STUB_MESSAGE}")')
        elif marker.startswith(END):
            if inside_since is None:
                raise MarkerError(
                    f"{where}, line {number}: '{END}' without a matching '{BEGIN}' above it. "
                    "Add the opening marker or remove this line."
                )
            inside_since = None
        elif inside_since is None:
            out.append(line)
    if inside_since is not None:
        raise MarkerError(
            f"{where}, line {inside_since}: '{BEGIN}' is never closed. "
            f"Add a '{END}' line after the solution."
        )
    return "\n".join(out)


def has_solution(source: str) -> bool:
    """True when a cell's source contains a solution block."""
    return any(line.strip().startswith(BEGIN) for line in source.split("\n"))


def student_notebook(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """Return a copy of `nb` with solutions stubbed out and all outputs and counts cleared."""
    student = copy.deepcopy(nb)
    for index, cell in enumerate(student.cells):
        if cell.cell_type != "code":
            continue
        if has_solution(cell.source) or END in cell.source:
            cell.source = strip_solutions(cell.source, where=f"{name}, cell {index}")
        cell.outputs = []
        cell.execution_count = None
    return student


def write_student_versions(source_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Write a student version of every `NN_*.ipynb` in `source_dir` to `out_dir`; return paths.

    Every notebook is converted and validated before anything is written, so a marker error in
    one notebook leaves `out_dir` exactly as it was.
    """
    source = Path(source_dir)
    notebooks = sorted(source.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(
            f"no notebooks named NN_topic.ipynb in {source}. Pass the workbook's notebooks/ "
            "folder (llama-edu student OUT_DIR --source path/to/notebooks)."
        )
    converted: list[tuple[str, nbformat.NotebookNode]] = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        student = student_notebook(nb, name=path.name)
        nbformat.validate(student)
        converted.append((path.name, student))

    target = Path(out_dir)
    if target.resolve() == source.resolve():
        raise ValueError(
            f"the output folder {target} is the source folder: writing there would replace the "
            "instructor notebooks. Choose another OUT_DIR."
        )
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, student in converted:
        written.append(_write_atomic(student, target / name))
    return written


def _write_atomic(nb: nbformat.NotebookNode, path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            nbformat.write(nb, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def default_notebook_dir() -> Path:
    """The workbook's notebooks/ folder beside the package (a checkout or an editable install)."""
    return Path(__file__).resolve().parent.parent / "notebooks"


# --- grading ---------------------------------------------------------------------------------

PASSED, FAILED, NOT_ATTEMPTED = "passed", "failed", "not attempted"
_CHECK_CALL = re.compile(r"\bchecks\.(\w+)\(")


@dataclass
class ExerciseGrade:
    """The outcome of one exercise in one submitted notebook."""

    check: str
    status: str  # "passed", "failed" or "not attempted"
    message: str = ""


@dataclass
class NotebookGrade:
    """Per-exercise outcomes of one notebook, or the reason it could not be graded to the end."""

    notebook: str
    exercises: list[ExerciseGrade] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        """How many exercises passed."""
        return sum(e.status == PASSED for e in self.exercises)


def exercise_checks(nb: nbformat.NotebookNode) -> list[str]:
    """The checks called by a notebook's exercise cells (cells with a solution block), in order."""
    names: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "code" and has_solution(cell.source):
            names += [n for n in _CHECK_CALL.findall(cell.source) if n not in names]
    return names


def _outcome(cell: nbformat.NotebookNode, check: str) -> ExerciseGrade:
    """Read an executed exercise cell's outputs: the check's success line, stub line, or error."""
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    for line in text.splitlines():
        if line.startswith(f"\u2713 checks.{check} passed"):
            return ExerciseGrade(check, PASSED, line.split(": ", 1)[-1])
        if line.startswith(f"\u2026 checks.{check}: not implemented yet"):
            return ExerciseGrade(check, NOT_ATTEMPTED, "still raises NotImplementedError")
    for out in cell.outputs:
        if out.output_type == "error":
            if out.ename == "CheckFailed":
                return ExerciseGrade(check, FAILED, out.evalue.removeprefix(f"checks.{check}: "))
            return ExerciseGrade(
                check, FAILED, f"the cell raised {out.ename}: {out.evalue} (before the check ran)"
            )
    return ExerciseGrade(check, NOT_ATTEMPTED, f"the cell does not call checks.{check}")


def grade_notebook(
    path: str | os.PathLike,
    time_limit: float = 900.0,
    expected: list[str] | None = None,
    kernel_name: str = "python3",
) -> NotebookGrade:
    """Run a submitted notebook in a fresh kernel (its folder as working directory) and grade it.

    `expected` lists the exercises' checks; by default they are read from the instructor
    notebook of the same name, or else from the submission's own check calls. The first cell
    that calls `checks.X` is exercise X (later calls are demonstrations). Cells run one after
    another with errors allowed, all within `time_limit` seconds. This runs the student's code:
    grade in a sandbox or a throwaway environment.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    path = Path(path)
    grade = NotebookGrade(path.name)
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as exc:  # not JSON, not a notebook, or an invalid one
        grade.error = f"not a valid notebook ({type(exc).__name__}: {str(exc)[:200]})"
        return grade
    if expected is None:
        instructor = default_notebook_dir() / path.name
        if instructor.is_file() and instructor.resolve() != path.resolve():
            expected = exercise_checks(nbformat.read(instructor, as_version=4))
        else:
            expected = list(dict.fromkeys(_CHECK_CALL.findall(_all_code(nb))))
    first_cell: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            for name in _CHECK_CALL.findall(cell.source):
                first_cell.setdefault(name, index)
    client = NotebookClient(
        nb,
        timeout=int(time_limit),
        kernel_name=kernel_name,
        allow_errors=True,
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    start = time.monotonic()
    ran_until = -1
    try:
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                remaining = time_limit - (time.monotonic() - start)
                if remaining <= 0:
                    raise CellTimeoutError(f"time limit of {time_limit:g} s reached")
                client.timeout = max(1, int(remaining))
                client.execute_cell(cell, index)
                ran_until = index
    except CellTimeoutError:
        grade.error = (
            f"stopped after the time limit of {time_limit:g} s (in cell {ran_until + 1}); "
            "is there an endless loop? Exercises after that point count as not attempted."
        )
    except DeadKernelError:
        grade.error = (
            f"the kernel died while running cell {ran_until + 1} (out of memory, or os._exit?); "
            "exercises after that point count as not attempted."
        )
    except Exception as exc:  # a kernel that cannot start, for example
        grade.error = f"could not run the notebook ({type(exc).__name__}: {exc})"
    grade.seconds = time.monotonic() - start
    for name in expected:
        index = first_cell.get(name)
        if index is None:
            grade.exercises.append(
                ExerciseGrade(name, NOT_ATTEMPTED, f"no cell calls checks.{name}")
            )
        elif index > ran_until:
            grade.exercises.append(
                ExerciseGrade(name, NOT_ATTEMPTED, "the notebook stopped before this exercise")
            )
        else:
            grade.exercises.append(_outcome(nb.cells[index], name))
    return grade


def _all_code(nb: nbformat.NotebookNode) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def grade_report(grades: list[NotebookGrade]) -> str:
    """A plain-text report: one block per notebook, one line per exercise."""
    lines = []
    for grade in grades:
        total = len(grade.exercises)
        lines.append(f"{grade.notebook}: {grade.passed}/{total} passed ({grade.seconds:.0f} s)")
        if grade.error:
            lines.append(f"  ERROR: {grade.error}")
        for ex in grade.exercises:
            detail = f" - {ex.message}" if ex.message and ex.status != PASSED else ""
            lines.append(f"  {ex.status:13s} checks.{ex.check}{detail}")
    return "\n".join(lines)
