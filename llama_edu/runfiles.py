"""Folders that the workbook writes (training runs, Hugging Face exports): markers and safe writes.

Two rules keep the user's files safe:

* a folder is replaced or emptied only when its own marker says that this project made it, and
  then only if every entry in it is one that the project writes;
* everything new is written into a staging folder next to its destination, flushed to disk
  (fsync), and renamed into place only when complete; the old folder is removed last.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path

RUN_FORMAT = "llama_edu.run/1"  # the "format" field of a run's config.json
LEGACY_RUN_FORMAT = 1  # what runs written before the marker carry in "format"
EXPORT_KEY = "llama_edu_export"  # export_hf writes {EXPORT_KEY: EXPORT_VERSION} into config.json
EXPORT_VERSION = 1


class RunFolderError(ValueError):
    """A folder is not (or not wholly) something this project wrote."""


def fsync_file(path: Path) -> None:
    """Flush one file's contents to disk."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (names, renames) to disk; a no-op where folders cannot be opened."""
    if os.name == "nt":  # Windows cannot open a folder for fsync; NTFS journals renames itself
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush every file below folder, then every folder (deepest first), then folder itself."""
    folders = []
    for root, _, files in os.walk(folder):
        for name in files:
            fsync_file(Path(root) / name)
        folders.append(Path(root))
    for path in reversed(folders):
        fsync_dir(path)


def atomic_write_text(path: Path, text: str) -> None:
    """Write text (UTF-8) to path so that readers see the old file or the whole new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def make_staging_dir(parent: Path, name: str, purpose: str = "new") -> Path:
    """Create an empty hidden folder `.{name}.{purpose}-XXXXXXXX` inside parent (same disk)."""
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        staging = parent / f".{name}.{purpose}-{secrets.token_hex(4)}"
        try:
            staging.mkdir()  # unlike mkdtemp this keeps the usual permissions (umask)
        except FileExistsError:
            continue
        return staging


def foreign_entries(folder: Path, top: Iterable[str], prefixes: Iterable[str] = (),
                    inner: dict[str, Iterable[str]] | None = None) -> list[str]:
    """Entries of folder that the project does not write (relative paths, sorted).

    `top` lists allowed names, `prefixes` allowed name beginnings (staging leftovers) and
    `inner` the allowed files inside allowed sub-folders; leftovers are checked one level deep.
    """
    top, prefixes, inner = set(top), tuple(prefixes), inner or {}
    found = []
    for child in sorted(folder.iterdir()):
        name = child.name
        if name in inner and child.is_dir() and not child.is_symlink():
            allowed = set(inner[name])
            found += [f"{name}/{c.name}" for c in sorted(child.iterdir()) if c.name not in allowed
                      or not c.is_file()]
        elif name in top and child.is_file() and not child.is_symlink():
            continue
        elif prefixes and name.startswith(prefixes) and child.is_dir() and not child.is_symlink():
            found += [f"{name}/{c.name}" for c in sorted(child.iterdir()) if c.is_dir()]
        else:
            found.append(name + ("/" if child.is_dir() else ""))
    return found


def install_folder(staging: Path, target: Path, last: str = "config.json") -> None:
    """Move a complete staging folder to target, replacing an old project folder only at the end.

    A missing target is a plain rename. An empty target keeps its folder: the entries move in
    one by one, `last` (the marker file) at the end. Any other target must already have been
    checked to be the project's own: it is renamed aside, the new folder renamed into place, and
    only then is the old one removed (a crash in between leaves it whole, next to the target).
    """
    fsync_tree(staging)
    if not target.exists():
        os.replace(staging, target)
    elif target.is_dir() and not any(target.iterdir()):
        names = sorted(staging.iterdir(), key=lambda p: p.name == last)
        for entry in names:
            os.replace(entry, target / entry.name)
        fsync_dir(target)
        staging.rmdir()
    else:
        if target.is_symlink():
            raise FileExistsError(
                f"{target} is a symbolic link; replacing it would replace the link, not the "
                "folder it points to. Nothing was changed; give the real folder instead."
            )
        aside = make_staging_dir(target.parent, target.name, "replaced")
        aside.rmdir()  # only the unused name is wanted
        os.replace(target, aside)
        os.replace(staging, target)
        fsync_dir(target.parent)
        shutil.rmtree(aside)
    fsync_dir(target.parent)
