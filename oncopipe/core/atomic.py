"""Write outputs beside their final path, then rename, so no stage leaves a half-written file.

``os.replace`` is atomic on one filesystem; the temporary name sits in the same directory
for that reason. On any exception the temporary file or directory is removed; what a killed
process (SIGKILL runs no cleanup) left is removed by the next write of the same path, or,
for a stage's scratch folder, when the stage starts again (:func:`scratch_dir`), and both by
:func:`sweep_orphans`, which every stage and ``serve`` call when they start (a stage that DVC
restores from its run-cache never runs again to clean up after its killed run).

A full disk while writing is a :class:`~oncopipe.core.errors.DiskFullError` naming the output
and the space it needed, not a traceback from deep inside a writer.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from oncopipe.core.errors import disk_full


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``.

    Works for files and directories: whatever the caller creates at the yielded path
    replaces ``path`` (an existing directory at ``path`` is removed first).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    _remove(tmp)
    remove_orphans(final.parent, rf"\.{re.escape(final.name)}\.tmp-(\d+)")  # killed writers
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as exc:
        full = disk_full(exc, final, needed=_bytes_in(tmp))
        if full is None:
            raise
        raise full from exc
    finally:
        _remove(tmp)


@contextlib.contextmanager
def scratch_dir(parent: str | os.PathLike, name: str) -> Iterator[Path]:
    """A scratch folder ``parent/.<name>.<pid>.<random>``, removed on exit however it ends.

    A process killed with SIGKILL cannot remove it, so first the scratch folders of ``name``
    left by processes that no longer run are removed (the pid in the name says whose it is;
    a name without one, from before pids were recorded, counts as left over).
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale(parent, name)
    with tempfile.TemporaryDirectory(prefix=f".{name}.{os.getpid()}.", dir=parent) as tmp:
        yield Path(tmp)


def remove_stale(parent: Path, name: str) -> list[Path]:
    """Remove the scratch folders ``.<name>.[<pid>.]<random>`` in ``parent`` whose process is
    gone (the random part is :mod:`tempfile`'s: 8 of ``[a-z0-9_]``, so the temporaries of
    :func:`atomic_path`, ``.<name>.tmp-<pid>``, never match)."""
    return remove_orphans(parent, rf"\.{re.escape(name)}\.(?:(\d+)\.)?[a-z0-9_]{{8}}",
                           dirs_only=True)


# What the writers of this module leave when killed: ``.<name>.tmp-<pid>`` (atomic_path) and
# ``.<name>.<pid>.<8 random>`` folders (scratch_dir); group 1 is the pid. Unlike
# :func:`remove_stale`, a name without a pid is left alone: it may be the user's.
_ORPHANS = (r"\..+\.tmp-(\d+)", r"\..+\.(\d+)\.[a-z0-9_]{8}")
SWEEP_DEPTH = 3  # data/prepared/<dataset>/<entry>: where outputs and their temporaries live
OUTPUT_ROOTS = ("data", "models", "metrics")  # where stages write, relative to the project


def sweep_orphans(*roots: str | os.PathLike, depth: int = SWEEP_DEPTH) -> list[Path]:
    """Remove the temporaries and scratch folders of dead processes under each root.

    Looks ``depth`` levels down (not into hidden folders, nor links), so a raw tree of
    thousands of files under ``data/`` costs a few directory listings, not a walk.
    """
    removed: list[Path] = []
    for root in map(Path, roots):
        if not root.is_dir():
            continue
        folders = [root]
        for _ in range(depth):
            below: list[Path] = []
            for folder in folders:
                removed += remove_orphans(folder, _ORPHANS[0])
                removed += remove_orphans(folder, _ORPHANS[1], dirs_only=True)
                try:
                    below += [Path(e.path) for e in os.scandir(folder)
                              if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
                except OSError:  # gone or unreadable meanwhile: nothing of ours to sweep
                    continue
            folders = sorted(below)
    return removed


def remove_orphans(parent: Path, pattern: str, dirs_only: bool = False) -> list[Path]:
    """Remove the entries of ``parent`` whose whole name matches ``pattern`` and whose process
    (the pid in group 1) no longer runs; a match without a pid counts as left over."""
    removed: list[Path] = []
    try:
        entries = sorted(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = re.fullmatch(pattern, entry.name)
        if not match or (dirs_only and (not entry.is_dir() or entry.is_symlink())):
            continue
        if match.group(1) and process_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)  # another cleaner may be at it too
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (this process, or another user's, counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _bytes_in(path: Path) -> int:
    """Bytes written so far at ``path`` (a file, or every file under a folder)."""
    try:
        if path.is_dir() and not path.is_symlink():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size if path.exists() else 0
    except OSError:
        return 0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
