"""Listing a raw download: one walker for every dataset, one error for a wrong layout.

:func:`walk` lists every regular file under a raw folder in one sorted order, following
symlinked folders (datasets are often assembled from links into a shared store) but never
round a loop. What cannot be listed as a file is a *problem* with its reason, never a silent
skip: a symlink loop, a broken symlink, a folder that cannot be opened, a FIFO or device. With a
:class:`~oncopipe.ingest.report.Report`, the walker owns the count: every file and every problem is
one item read, and each problem is also one rejection, so a dataset's code only has to keep or
reject the files it is handed.

:class:`RawLayoutError` is the one "the raw data is not laid out as the release is" error of
all datasets: a missing folder, a labels CSV that is not there, not UTF-8 or lacks a column.
It is an :class:`~oncopipe.core.errors.InputError`, so a stage stops with its one-line message
(exit 2); a problem with one item is a rejection instead. :func:`read_csv` reads the
releases' CSV files strictly as UTF-8.
"""

from __future__ import annotations

import codecs
import csv
import errno
import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from oncopipe.core import limits
from oncopipe.core.errors import RawLayoutError

if TYPE_CHECKING:
    from oncopipe.ingest.report import Report


@dataclass
class RawTree:
    """The files under ``root`` (sorted by relative path) and what could not be listed."""

    root: Path
    base: Path  # the raw root: what reject paths are relative to (``root`` or above it)
    files: list[Path] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)  # (path, reason)

    def rel(self, path: Path) -> str:
        """``path`` relative to the raw root, POSIX separators (the ``path`` of a reject)."""
        return path.relative_to(self.base).as_posix()

    def record(self, report: Report) -> None:
        """Count each problem as one item read and rejected."""
        for path, reason in self.problems:
            report.read()
            report.reject(self.rel(path), reason)


def walk(root: str | Path, report: Report | None = None, what: str = "raw data",
         base: str | Path | None = None) -> RawTree:
    """Every regular file under ``root``, and the entries that are not one (with the reason).

    Files are sorted by their path relative to ``root``, component by component (the order of
    manifests and arrays; never the filesystem's). With ``report``, each file is counted as
    read and each problem as read and rejected, under its path relative to ``base`` (the raw
    root, when ``root`` is a folder inside it; default ``root``). Raises
    :class:`RawLayoutError` when ``root`` is not a folder (``what`` names it in the message).
    """
    root = Path(root)
    _check_root(root, what)
    tree = RawTree(root, Path(base) if base is not None else root)
    for _, files in _walk_dir(tree, root, _top(root)):
        tree.files.extend(files)
    tree.files.sort(key=lambda p: p.relative_to(root).parts)
    tree.problems.sort(key=lambda item: item[0].relative_to(root).parts)
    if report is not None:
        report.read(len(tree.files))
        tree.record(report)
    return tree


def walk_folders(root: str | Path, report: Report | None = None, what: str = "raw data"
                 ) -> Iterator[tuple[Path, list[Path]]]:
    """:func:`walk` one folder at a time, for trees too large to list at once: yields each
    folder and its regular files (sorted by name), folders depth-first in name order, so the
    caller holds one folder's list (or stops after the first, ``root`` itself). With
    ``report``, each folder's files are counted as read, and its problems as read and
    rejected, as it is yielded.
    """
    root = Path(root)
    _check_root(root, what)
    tree = RawTree(root, root)
    for folder, files in _walk_dir(tree, root, _top(root)):
        if report is not None:
            report.read(len(files))
            tree.record(report)
        tree.problems.clear()
        yield folder, files
    if report is not None:
        tree.record(report)


def _check_root(root: Path, what: str) -> None:
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "not found"
        raise RawLayoutError(f"{root}: {what} folder {state}")


def _top(root: Path) -> dict[tuple[int, int], Path]:
    top = root.stat()
    return {(top.st_dev, top.st_ino): root}


def _walk_dir(tree: RawTree, folder: Path, ancestors: dict[tuple[int, int], Path]
              ) -> Iterator[tuple[Path, list[Path]]]:
    """Yield ``folder``'s regular files, then each subfolder's; problems go to ``tree``.
    ``ancestors`` maps (device, inode) of each folder above to its path."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        tree.problems.append((folder, f"unreadable folder: {exc.strerror or exc}"))
        return
    files: list[Path] = []
    subfolders: list[tuple[Path, tuple[int, int]]] = []
    for entry in entries:
        path = Path(entry.path)
        try:
            st = entry.stat()  # follows symlinks
        except OSError as exc:
            tree.problems.append((path, _stat_problem(path, exc)))
            continue
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                where = tree.rel(ancestors[key])
                where = "the raw root" if where == "." else where
                tree.problems.append((path, f"symlink loop: links back to {where}"))
                continue
            subfolders.append((path, key))
        elif stat.S_ISREG(st.st_mode):
            files.append(path)
        else:
            tree.problems.append((path, "not a regular file: a FIFO, socket or device"))
    yield folder, files
    for path, key in subfolders:
        yield from _walk_dir(tree, path, {**ancestors, key: path})


def _stat_problem(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop: the link resolves to itself"
    if path.is_symlink():
        return f"broken symlink: target {os.readlink(path)} does not exist"
    return f"unreadable: {exc.strerror or exc}"


def read_text(path: str | Path) -> str:
    """A release's text file as UTF-8 (a BOM is dropped); anything else is a layout error.

    Why strict: every id, label and path in these CSVs is ASCII in the releases, so a byte
    that is not UTF-8 means the file was re-saved by another program (typically a
    spreadsheet writing cp1252). Guessing that encoding could turn ids into near-misses that
    match nothing; the error names the file, the byte and its position, and the fix.
    """
    path = Path(path)
    limits.active().check("max_table_bytes", path.stat().st_size, path)
    data = path.read_bytes()
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = start + exc.start  # an offset in the file, BOM included
        line = data.count(b"\n", 0, at) + 1
        column = at - (data.rfind(b"\n", 0, at) + 1) + 1
        raise RawLayoutError(
            f"{path}: not UTF-8 text (byte 0x{data[at]:02x} at line {line}, column "
            f"{column}); re-save it as UTF-8, e.g. iconv -f cp1252 -t utf-8"
        ) from None


def read_csv(path: str | Path) -> list[list[str]]:
    """All rows of a CSV file read with :func:`read_text`; the first row is its header.

    A column named twice in the header is an error: reading rows as ``name -> value`` would
    keep one of the two silently (``csv.DictReader`` keeps the last), and the two may
    disagree, e.g. two ``target`` columns relabelling every image.
    """
    try:
        rows = list(csv.reader(io.StringIO(read_text(path), newline="")))
    except csv.Error as exc:
        raise RawLayoutError(f"{path}: not a readable CSV file ({exc})") from None
    names = [name.strip() for name in rows[0]] if rows else []
    twice = sorted({name for name in names if name and names.count(name) > 1})
    if twice:
        raise RawLayoutError(f"{path}: column {twice[0]!r} appears "
                             f"{names.count(twice[0])} times in the header; keep one")
    return rows
