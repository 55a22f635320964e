"""The `llama-edu` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import classroom


def _student(args: argparse.Namespace) -> int:
    source = Path(args.source) if args.source else classroom.default_notebook_dir()
    try:
        written = classroom.write_student_versions(source, args.out_dir)
    except (classroom.MarkerError, FileNotFoundError, ValueError) as exc:
        print(f"llama-edu student: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    print(f"{len(written)} student notebooks written to {args.out_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser for all subcommands."""
    parser = argparse.ArgumentParser(
        prog="llama-edu", description="Tools for the llama_edu workbook."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    student = sub.add_parser(
        "student", help="write student versions (solutions removed, outputs cleared)"
    )
    student.add_argument("out_dir", metavar="OUT_DIR", help="folder for the student notebooks")
    student.add_argument(
        "--source", help="folder with the instructor notebooks (default: the workbook's notebooks/)"
    )
    student.set_defaults(func=_student)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
