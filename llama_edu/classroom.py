"""The classroom: student versions (solutions become stubs) and grading of submitted notebooks."""

from __future__ import annotations

import ast
import builtins
import copy
import difflib
import io
import json
import keyword
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"
STUB_MESSAGE = "Exercise: replace this line with your solution"


class MarkerError(ValueError):
    """Solution markers in a notebook are unbalanced or nested."""


def strip_solutions(source: str, where: str = "cell") -> str:
    """Replace every solution block in one cell's source with an indented NotImplementedError."""
    return _strip_blocks(source, BEGIN, END, f'raise NotImplementedError("{STUB_MESSAGE}")', where)


def strip_hidden_tests(source: str, where: str = "cell") -> str:
    """Remove every hidden-test block (nbgrader's, kept for grading only) from one cell's source."""
    return _strip_blocks(source, BEGIN_HIDDEN, END_HIDDEN, None, where)


def _strip_blocks(source: str, begin: str, end: str, stub: str | None, where: str) -> str:
    """Replace each `begin` ... `end` block with `stub` at the block's indent (None: drop it)."""
    kind, content = ("solution", "solution") if begin == BEGIN else ("hidden-test", "hidden tests")
    lines = source.split("\n")
    out: list[str] = []
    inside_since: int | None = None
    for number, line in enumerate(lines, start=1):
        marker = line.strip()
        if marker.startswith(begin):
            if inside_since is not None:
                raise MarkerError(
                    f"{where}, line {number}: '{begin}' inside the {kind} block opened on line "
                    f"{inside_since}; {kind} blocks cannot be nested. Close the first block "
                    f"with '{end}' before opening another."
                )
            inside_since = number
            if stub is not None:
                out.append(line[: len(line) - len(line.lstrip())] + stub)
        elif marker.startswith(end):
            if inside_since is None:
                raise MarkerError(
                    f"{where}, line {number}: '{end}' without a matching '{begin}' above it. "
                    "Add the opening marker or remove this line."
                )
            inside_since = None
        elif inside_since is None:
            out.append(line)
    if inside_since is not None:
        raise MarkerError(
            f"{where}, line {inside_since}: '{begin}' is never closed. "
            f"Add a '{end}' line after the {content}."
        )
    return "\n".join(out)


def has_solution(source: str) -> bool:
    """True when a cell's source contains a solution block."""
    return any(line.strip().startswith(BEGIN) for line in source.split("\n"))


def student_notebook(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """Return a copy of `nb` with solutions stubbed out, hidden tests removed, outputs cleared."""
    student = copy.deepcopy(nb)
    for index, cell in enumerate(student.cells):
        if cell.cell_type != "code":
            continue
        if has_solution(cell.source) or END in cell.source:
            cell.source = strip_solutions(cell.source, where=f"{name}, cell {index}")
        if BEGIN_HIDDEN in cell.source or END_HIDDEN in cell.source:
            cell.source = strip_hidden_tests(cell.source, where=f"{name}, cell {index}")
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
CHECK_HELPERS = ("available", "choose", "require", "reset_results", "results")
"""`checks.<helper>(...)` calls that are not exercise checks (as llama_edu.checks.HELPERS)."""
_CHECK_CALL = re.compile(rf"\bchecks\.(?!(?:{'|'.join(CHECK_HELPERS)})\()(\w+)\(")


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


def _candidate_expression(source: str, check: str) -> str | None:
    """The source of the first argument of the first `checks.<check>(...)` call in a cell."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython syntax (%magic, !shell): translate it to Python first
        try:
            from IPython.core.inputtransformer2 import TransformerManager

            tree = ast.parse(TransformerManager().transform_cell(source))
        except Exception:
            return None
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == check
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "checks"
    ]
    calls.sort(key=lambda node: (node.lineno, node.col_offset))
    if not calls:
        return None
    call = calls[0]
    if call.args and not isinstance(call.args[0], ast.Starred):
        return ast.unparse(call.args[0])
    if len(call.keywords) == 1 and call.keywords[0].arg is not None:
        return ast.unparse(call.keywords[0].value)
    return None


# Runs in the kernel right after an exercise cell: writes the handed-in object to the grader's
# folder. It proves nothing by itself; the checking process decides what the object is worth.
_HAND_IN = """\
def __llama_edu_hand_in(expression, path):
    import cloudpickle
    data = cloudpickle.dumps(eval(expression, get_ipython().user_ns))
    with open(path, "wb") as handle:
        handle.write(data)
try:
    __llama_edu_hand_in({expression!r}, {path!r})
finally:
    del __llama_edu_hand_in
"""


def _hand_in(client: object, expression: str, target: Path) -> str | None:
    """Have the kernel pickle `expression` to `target`; return the error it raised, if any."""
    code = _HAND_IN.format(expression=expression, path=str(target))
    msg_id = client.kc.execute(code, silent=True, store_history=False)  # type: ignore[attr-defined]
    reply = client.wait_for_reply(msg_id)  # type: ignore[attr-defined]
    content = (reply or {}).get("content", {})
    if content.get("status") == "error":
        return f"{content.get('ename')}: {content.get('evalue')}"
    return None


# sys.path loses '' (the working directory) first, so that files planted there cannot stand in for
# llama_edu or torch.
_CHECKER = (
    "import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
    "from llama_edu.grading import run_checks; run_checks()"
)


def _run_checker(jobs: list[dict[str, str]], folder: Path, timeout: float) -> dict[str, dict]:
    """Run the reference checks in a fresh process; return the verdicts that carry the secret."""
    secret = secrets.token_hex(16)
    stdin = f"{secret}\n{json.dumps(jobs)}\n"
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHECKER],
            input=stdin, capture_output=True, text=True, timeout=timeout, cwd=folder,
        )  # fmt: skip
        stdout, stderr = done.stdout, done.stderr
    except subprocess.TimeoutExpired as expired:
        stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else expired.stdout
        stderr = f"the checks did not finish within {timeout:g} s"
    verdicts: dict[str, dict] = {}
    for line in (stdout or "").splitlines():
        tag, _, payload = line.partition("\t")
        if tag == secret:
            verdict = json.loads(payload)
            verdicts.setdefault(verdict["check"], verdict)
    for job in jobs:
        if job["check"] not in verdicts:
            last = (stderr or "").strip().splitlines()[-1:] or ["no message"]
            verdicts[job["check"]] = {
                "status": FAILED,
                "message": "the grader's checking process stopped while checking this function "
                f"(an endless loop, or exit()?): {last[0][:200]}",
            }
    return verdicts


def _explain(cell: nbformat.NotebookNode, check: str, hand_in_error: str | None) -> ExerciseGrade:
    """Why no function reached the grader: the cell's own error, or the hand-in's error."""
    for out in cell.outputs:
        if out.output_type == "error" and out.ename not in ("CheckFailed", "AssertionError"):
            return ExerciseGrade(
                check, FAILED, f"the cell raised {out.ename}: {out.evalue} (before the check ran)"
            )
    if hand_in_error and "ickl" in hand_in_error:  # PicklingError, "cannot pickle ..."
        return ExerciseGrade(
            check, FAILED,
            f"your function could not be copied to the grader ({hand_in_error[:200]}). Define "
            "it with `def` at the top level of the cell, using only plain values and modules.",
        )  # fmt: skip
    return ExerciseGrade(
        check, FAILED,
        f"the grader could not find the function handed to checks.{check} after the cell ran "
        f"({hand_in_error or 'no argument'}). Call checks.{check}(your_function) in the "
        "exercise cell.",
    )  # fmt: skip


def chapter_number(name: str) -> str | None:
    """The first two-digit number in a file name ('05' for alice-05.ipynb), or None."""
    found = re.search(r"(?<!\d)(\d\d)(?!\d)", Path(name).name)
    return found.group(1) if found else None


EXERCISE_LIST = Path(__file__).resolve().parent / "assets" / "exercises.json"


def exercise_list(notebook_dir: str | os.PathLike) -> dict[str, list[str]]:
    """Chapter number -> the checks of its exercises, read from the `NN_*.ipynb` in a folder."""
    chapters: dict[str, list[str]] = {}
    for path in sorted(Path(notebook_dir).glob("[0-9][0-9]_*.ipynb")):
        chapters[path.name[:2]] = exercise_checks(nbformat.read(path, as_version=4))
    return chapters


def shipped_exercise_list() -> dict[str, list[str]]:
    """The chapter -> exercises list shipped with the package (assets/exercises.json)."""
    return json.loads(EXERCISE_LIST.read_text(encoding="utf-8"))


def expected_exercises(path: Path, nb: nbformat.NotebookNode) -> list[str]:
    """The exercises a submission should contain: instructor notebook, chapter list, or its own."""
    instructor = default_notebook_dir() / path.name
    if instructor.is_file() and instructor.resolve() != path.resolve():
        return exercise_checks(nbformat.read(instructor, as_version=4))
    chapter = chapter_number(path.name)
    shipped = shipped_exercise_list() if EXERCISE_LIST.is_file() else {}
    if chapter in shipped:
        return list(shipped[chapter])
    return list(dict.fromkeys(_CHECK_CALL.findall(_all_code(nb))))


def grade_notebook(
    path: str | os.PathLike,
    time_limit: float = 900.0,
    expected: list[str] | None = None,
    kernel_name: str = "python3",
) -> NotebookGrade:
    """Run a submitted notebook in a fresh kernel (its folder as working directory) and grade it.

    `expected` lists the exercises' checks; by default they come from the instructor notebook of
    the same name, else from the shipped list for the chapter number in the file name, else from
    the submission's own check calls. The first cell that calls `checks.X` is exercise X (later
    calls are demonstrations). Cells run one after another with errors allowed, all within
    `time_limit` seconds. After exercise X's cell the kernel hands the object passed to
    `checks.X` to the grader, and a separate Python process runs the reference check on it: the
    kernel's printed output never awards a pass. This runs the student's code: grade in a
    sandbox or a throwaway environment.
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
        expected = expected_exercises(path, nb)
    first_cell: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.outputs = []  # stored outputs are never evidence: everything is run again
            for name in _CHECK_CALL.findall(cell.source):
                first_cell.setdefault(name, index)
    at_cell: dict[int, list[str]] = {}
    for name in expected:
        if name in first_cell:
            at_cell.setdefault(first_cell[name], []).append(name)
    client = NotebookClient(
        nb,
        timeout=int(time_limit),
        kernel_name=kernel_name,
        allow_errors=True,
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    start = time.monotonic()
    ran_until = -1
    hand_in_errors: dict[str, str | None] = {}
    with tempfile.TemporaryDirectory(prefix="llama-edu-grade-") as folder:
        handed_in = Path(folder)
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
                    for name in at_cell.get(index, []):
                        expression = _candidate_expression(cell.source, name)
                        if expression is None:
                            hand_in_errors[name] = f"no argument found in checks.{name}(...)"
                            continue
                        target = handed_in / f"{name}.pkl"
                        target.unlink(missing_ok=True)
                        hand_in_errors[name] = _hand_in(client, expression, target)
                        if hand_in_errors[name]:
                            target.unlink(missing_ok=True)
                    ran_until = index
        except CellTimeoutError:
            grade.error = (
                f"stopped after the time limit of {time_limit:g} s (in cell {ran_until + 1}); "
                "is there an endless loop? Exercises after that point count as not attempted."
            )
        except DeadKernelError:
            grade.error = (
                f"the kernel died while running cell {ran_until + 1} (out of memory, or "
                "os._exit?); exercises after that point count as not attempted."
            )
        except Exception as exc:  # a kernel that cannot start, for example
            grade.error = f"could not run the notebook ({type(exc).__name__}: {exc})"
        jobs = [
            {"check": name, "path": str(handed_in / f"{name}.pkl")}
            for name in expected
            if (handed_in / f"{name}.pkl").is_file() and first_cell.get(name, -1) <= ran_until
        ]
        remaining = time_limit - (time.monotonic() - start)
        verdicts = _run_checker(jobs, handed_in, max(60.0, remaining)) if jobs else {}
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
        elif name in verdicts:
            grade.exercises.append(
                ExerciseGrade(name, verdicts[name]["status"], verdicts[name]["message"])
            )
        else:
            grade.exercises.append(_explain(nb.cells[index], name, hand_in_errors.get(name)))
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


# --- Does a student version show an answer? -------------------------------------------------

_KEEP_NAMES = frozenset(keyword.kwlist) | frozenset(dir(builtins)) | {"torch", "math", "F", "nn"}
_MIN_ESSENTIAL_CHARS = 12
"""Solution lines shorter than this (normalised) are too generic to count (`_.append(_)`)."""
LINE_SIMILARITY = 0.8
"""Two normalised lines count as the same line at this difflib similarity ratio or above."""
LEAK_FRACTION = 0.5
"""A code cell shows an answer when it holds at least this share of the solution's lines."""


def normal_line(line: str) -> str:
    """One code line without whitespace or comments, local names replaced by `_`.

    Attribute names (`.softmax`), keywords, builtins and `torch`/`math`/`F`/`nn` are kept, so
    `w = torch.softmax(s, dim=-1)` and `weights = torch.softmax(scores, dim=-1)` are the same line.
    """
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(line.strip()).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return re.sub(r"\s+", "", line)
    out, previous = [], ""
    for token in tokens:
        if token.type in _LAYOUT_TOKENS:
            continue
        text = token.string
        if token.type == tokenize.NAME and text not in _KEEP_NAMES and previous != ".":
            text = "_"
        out.append(text)
        previous = token.string
    return "".join(out)


_LAYOUT_TOKENS = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
}


def _code_lines(source: str) -> list[str]:
    lines = []
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "%", "!")):
            lines.append(normal_line(stripped))
    return lines


def solution_blocks(source: str) -> list[str]:
    """The code inside each `### BEGIN SOLUTION` ... `### END SOLUTION` block of one cell."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in source.split("\n"):
        marker = line.strip()
        if marker.startswith(BEGIN):
            current = []
        elif marker.startswith(END) and current is not None:
            blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def essential_lines(solution: str) -> list[str]:
    """The normalised lines of a solution that carry its idea (long enough to be specific)."""
    return [
        line
        for line in dict.fromkeys(_code_lines(solution))
        if len(line) >= _MIN_ESSENTIAL_CHARS and re.sub(r"^return|[\W_]", "", line)
    ]


def shown_lines(essential: list[str], cell_lines: list[str]) -> list[str]:
    """The essential lines that a cell holds, exactly or nearly (similarity >= LINE_SIMILARITY)."""
    shown = []
    for line in essential:
        if line in cell_lines or any(
            difflib.SequenceMatcher(None, line, other).ratio() >= LINE_SIMILARITY
            for other in cell_lines
        ):
            shown.append(line)
    return shown


def answer_leaks(instructor: nbformat.NotebookNode, name: str = "notebook") -> list[str]:
    """Every exercise whose answer a code cell of the student version shows, one line each.

    The measure: the essential lines of each solution block (normalised by `normal_line`, at
    least 12 characters, more than names and punctuation) are looked up in every other code
    cell of the student notebook; a cell that holds, exactly or nearly, at least half of them,
    and at least two (or the only one), shows the answer.
    """
    student = student_notebook(instructor, name=name)
    cells = [
        (index, _code_lines(cell.source))
        for index, cell in enumerate(student.cells)
        if cell.cell_type == "code"
    ]
    found = []
    for index, cell in enumerate(instructor.cells):
        if cell.cell_type != "code" or not has_solution(cell.source):
            continue
        check = (_CHECK_CALL.findall(cell.source) or ["?"])[0]
        for block in solution_blocks(cell.source):
            essential = essential_lines(block)
            for other, lines in cells:
                if other == index or not essential:
                    continue
                shown = shown_lines(essential, lines)
                if (
                    len(shown) >= min(2, len(essential))
                    and len(shown) / len(essential) >= LEAK_FRACTION
                ):
                    found.append(
                        f"{name}: the answer to checks.{check} (cell {index}) is shown in student "
                        f"cell {other}: {len(shown)} of its {len(essential)} essential lines, "
                        f"e.g. {shown[0]!r}"
                    )
                    break
    return found
