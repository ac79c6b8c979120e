"""Write outputs beside their final path, then rename, so no stage leaves a half-written file.

``os.replace`` is atomic on one filesystem; the temporary name sits in the same directory
for that reason. On any exception the temporary file or directory is removed; what a killed
process (SIGKILL runs no cleanup) left is removed by the next write of the same path, or,
for a stage's scratch folder, when the stage starts again (:func:`scratch_dir`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


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
    _remove_orphans(final.parent, rf"\.{re.escape(final.name)}\.tmp-(\d+)")  # killed writers
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
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
    return _remove_orphans(parent, rf"\.{re.escape(name)}\.(?:(\d+)\.)?[a-z0-9_]{{8}}",
                           dirs_only=True)


def _remove_orphans(parent: Path, pattern: str, dirs_only: bool = False) -> list[Path]:
    """Remove the entries of ``parent`` whose whole name matches ``pattern`` and whose process
    (the pid in group 1) no longer runs; a match without a pid counts as left over."""
    removed = []
    for entry in sorted(parent.iterdir()):
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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
