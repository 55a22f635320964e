"""nbgrader cell metadata for the workbook: each exercise becomes an answer cell plus a test cell.

The workbook's solution markers are nbgrader's own, so a teacher can give the notebooks to
`nbgrader generate_assignment` and `nbgrader autograde` as they are once the cells carry
nbgrader's metadata (schema version 3):

- every code cell with a `### BEGIN SOLUTION` block is an autograded answer cell (solution, not
  graded itself, not locked), with grade id `answer_<check>`;
- right after each exercise cell (one that calls `checks.<name>(...)`) comes a locked test cell
  `test_<check>` worth as many points as the exercise's difficulty has stars. Its only code sits
  in a hidden-test block, `checks.require("<check>")`, which fails unless the exercise's check
  passed in the kernel. nbgrader removes the block from the student version and puts it back to
  grade; `llama_edu.classroom.student_notebook` removes it too.

`add_nbgrader_metadata` is idempotent: run it again after editing a notebook and only what
changed changes (a test cell keeps its outputs, execution count and cell id).
"""

from __future__ import annotations

import copy
import re

import nbformat

from .classroom import _CHECK_CALL, BEGIN_HIDDEN, END_HIDDEN, has_solution

SCHEMA_VERSION = 3
ANSWER_PREFIX, TEST_PREFIX = "answer_", "test_"
HEADER = re.compile(
    r"^### Exercise (\d+)\.(\d+) · (\w+) \(difficulty ([★☆]{3})"
    r"(?:, importance ([★☆]{3}))?, about (\d+) minutes\)",
    re.M,
)
"""An exercise header, with or without the importance rating."""
TEST_COMMENT = "# nbgrader test: the points for this exercise need its check above to pass."
DELIMITERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
"""What nbgrader looks for anywhere in a line of any cell (markdown included)."""


class NbgraderMetadataError(ValueError):
    """A notebook cannot be given nbgrader metadata as it is; the message lists every cell."""


def points_for(difficulty: str) -> int:
    """The points of an exercise: the number of filled stars of its difficulty (★★☆ is 2)."""
    return difficulty.count("★")


def grader_source(names: list[str]) -> str:
    """The source of the test cell that follows an exercise calling `checks.<name>` for names."""
    quoted = ", ".join(f'"{name}"' for name in names)
    return f"{TEST_COMMENT}\n{BEGIN_HIDDEN}\nchecks.require({quoted})\n{END_HIDDEN}"


def answer_metadata(grade_id: str) -> dict:
    """nbgrader metadata of an autograded answer cell (the student writes here; no points)."""
    return {
        "grade": False,
        "grade_id": grade_id,
        "locked": False,
        "schema_version": SCHEMA_VERSION,
        "solution": True,
    }


def grader_metadata(grade_id: str, points: int) -> dict:
    """nbgrader metadata of a locked autograder test cell worth `points`."""
    return {
        "grade": True,
        "grade_id": grade_id,
        "locked": True,
        "points": points,
        "schema_version": SCHEMA_VERSION,
        "solution": False,
    }


def _ours(cell: nbformat.NotebookNode) -> str | None:
    """The grade id of nbgrader metadata this module wrote on a cell, or None."""
    grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", "")
    return grade_id if grade_id.startswith((ANSWER_PREFIX, TEST_PREFIX)) else None


def _is_our_test(cell: nbformat.NotebookNode) -> bool:
    return (
        cell.cell_type == "code"
        and (_ours(cell) or "").startswith(TEST_PREFIX)
        and BEGIN_HIDDEN in cell.source
    )


def delimiter_problems(nb: nbformat.NotebookNode, name: str = "notebook") -> list[str]:
    """Lines that nbgrader would read as solution or hidden-test markers but the workbook does not.

    nbgrader treats any line containing 'BEGIN SOLUTION' (and the like) as a marker, in markdown
    cells too; the workbook's markers are whole `### ...` lines of code cells.
    """
    found = []
    for index, cell in enumerate(nb.cells):
        for number, line in enumerate(cell.source.split("\n"), start=1):
            for word in DELIMITERS:
                is_marker = cell.cell_type == "code" and line.strip().startswith(f"### {word}")
                if word in line and not is_marker:
                    found.append(
                        f"{name}, cell {index} ({cell.cell_type}), line {number} contains "
                        f"'{word}', which nbgrader would take for a marker and cut out. Reword it "
                        f"(for example 'the solution markers'), or make it a whole '### {word}' "
                        "line of a code cell."
                    )
                    break
    return found


def _exercise_header(prose: str) -> re.Match[str] | None:
    """The last exercise header in the markdown since the previous exercise."""
    headers = list(HEADER.finditer(prose))
    return headers[-1] if headers else None


def _new_test_cell(nb: nbformat.NotebookNode, grade_id: str, taken: set[str]) -> dict:
    cell = nbformat.v4.new_code_cell("")
    if (nb.nbformat, nb.nbformat_minor) < (4, 5):
        cell.pop("id", None)  # cell ids exist from nbformat 4.5 on
    else:
        wanted = f"nbgrader-{grade_id}".replace("_", "-")[:64]
        cell.id = wanted if wanted not in taken else cell.id
    return cell


def add_nbgrader_metadata(
    nb: nbformat.NotebookNode, name: str = "notebook"
) -> nbformat.NotebookNode:
    """Return a copy of a workbook notebook that nbgrader can use as it is (see module docstring).

    Raises NbgraderMetadataError listing every cell that stands in the way: marker text outside a
    marker line, or an exercise cell without an `### Exercise N.k · name (difficulty ...)` header.
    """
    nb = copy.deepcopy(nb)
    problems = delimiter_problems(nb, name)
    old_tests = {}
    for cell in nb.cells:
        if _is_our_test(cell):
            old_tests.setdefault(_ours(cell), cell)
    taken = {cell.get("id") for cell in nb.cells}

    cells: list[nbformat.NotebookNode] = []
    used_ids: set[str] = set()
    prose = ""

    def unique(grade_id: str) -> str:
        candidate, n = grade_id, 2
        while candidate in used_ids:
            candidate, n = f"{grade_id}_{n}", n + 1
        used_ids.add(candidate)
        return candidate

    solutions_without_check = 0
    for index, cell in enumerate(nb.cells):
        if _is_our_test(cell):
            continue  # put back (or dropped) after its exercise below
        if _ours(cell):
            del cell.metadata["nbgrader"]  # written by an earlier run; decided again here
        cells.append(cell)
        if cell.cell_type == "markdown":
            prose += cell.source + "\n"
        if cell.cell_type != "code" or not has_solution(cell.source):
            continue
        checks = list(dict.fromkeys(_CHECK_CALL.findall(cell.source)))
        if not checks:
            solutions_without_check += 1
            cell.metadata["nbgrader"] = answer_metadata(
                unique(f"{ANSWER_PREFIX}cell_{solutions_without_check}")
            )
            continue
        header = _exercise_header(prose)
        prose = ""
        if header is None:
            problems.append(
                f"{name}, cell {index}: an exercise cell (checks.{checks[0]}) without an "
                "'### Exercise N.k · name (difficulty ★★☆, importance ★★★, about M minutes)' "
                "header in the markdown above it; add the header, whose difficulty sets the points."
            )
            continue
        cell.metadata["nbgrader"] = answer_metadata(unique(ANSWER_PREFIX + checks[0]))
        test_id = unique(TEST_PREFIX + checks[0])
        test = old_tests.pop(test_id, None)
        if test is None:
            test = _new_test_cell(nb, test_id, taken)
        test.source = grader_source(checks)
        test.metadata["nbgrader"] = grader_metadata(test_id, points_for(header[4]))
        cells.append(test)
    if problems:
        raise NbgraderMetadataError(
            f"{len(problems)} problem(s) stop nbgrader metadata:\n" + "\n".join(problems)
        )
    nb.cells = cells
    return nb


def total_points(nb: nbformat.NotebookNode) -> float:
    """The points of all nbgrader test cells of a notebook."""
    return sum(
        cell.metadata.get("nbgrader", {}).get("points", 0)
        for cell in nb.cells
        if cell.metadata.get("nbgrader", {}).get("grade")
    )
