"""Student versions of the notebooks: solution blocks become `NotImplementedError` stubs."""

from __future__ import annotations

import copy
import os
import tempfile
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
