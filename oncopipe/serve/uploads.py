"""Uploads into a private temporary folder, safely: size limits, zips without surprises.

Everything an upload becomes is written under one :func:`tempfile.mkdtemp` folder that the
caller deletes after the answer. The names inside come from us, never from the client (only
the suffix is kept, to tell the format); zip entries are checked before anything is written:
no absolute paths, no ``..``, no links, a capped entry count, and caps on each entry's and the
total uncompressed size, checked against what the headers declare and again while inflating
(the sizes a zip header states can lie). The caps are :mod:`oncopipe.core.limits`'. A volume
(``.nii`` or ``.nii.gz``) is kept as uploaded and handed to the dataset's reader, which reads
the NIfTI header first and inflates no more than the voxels it declares, within the limits
(:func:`oncopipe.datasets.mosmed.volume.read_nifti`): nothing is inflated here.
:class:`Upload` is one request's upload, as the routes use it; error messages it passes on
name the client's file, never a server path. Every copy loop checks a ``cancel`` event
between chunks, so work for a client that went away stops (:class:`Abandoned`).

The folder's name carries the server's pid (``oncopipe-serve-<pid>-*``): what a killed server
left is swept at the next start (:func:`sweep`), and a server sweeps its own at shutdown.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, BinaryIO

from oncopipe.core.atomic import remove_orphans
from oncopipe.core.errors import InputError
from oncopipe.core.limits import Limits
from oncopipe.imagefiles.images import ImageError, header_size

if TYPE_CHECKING:
    from fastapi import UploadFile

    from oncopipe.core.contract import PredictInput
    from oncopipe.serve.state import Settings

CHUNK = 1 << 20
PREFIX = "oncopipe-serve-"  # + "<pid>-<random>": an upload's temporary folder


class UploadError(InputError):
    """The upload cannot be used; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Abandoned(Exception):
    """The client disconnected; the work for it was stopped."""


def sweep(own: bool = False) -> list[Path]:
    """Remove the upload folders of servers that no longer run (and with ``own``, this
    server's, at shutdown) from the temporary directory."""
    tmp = Path(tempfile.gettempdir())
    removed = remove_orphans(tmp, rf"{re.escape(PREFIX)}(?:(\d+)-)?[a-z0-9_]{{8}}",
                             dirs_only=True)
    if own:
        for folder in tmp.glob(f"{PREFIX}{os.getpid()}-*"):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def suffix_of(filename: str, suffixes: tuple[str, ...]) -> str:
    """The known suffix ``filename`` ends with (longest first: ``.nii.gz`` before ``.nii``),
    else its last one; lower case."""
    name = filename.lower()
    for s in sorted(suffixes, key=len, reverse=True):
        if name.endswith(s):
            return s
    return PurePosixPath(name.replace("\\", "/")).suffix


def save(stream: BinaryIO, dest: Path, limit: int, cancel: threading.Event | None = None
         ) -> int:
    """Copy ``stream`` to ``dest``; :class:`UploadError` (413) beyond ``limit`` bytes."""
    with open(dest, "wb") as out:
        return _copy_capped(stream, out, limit,
                            f"upload larger than the limit of {limit} bytes", cancel)


def _copy_capped(src: IO[bytes], out: IO[bytes], budget: int, message: str,
                 cancel: threading.Event | None = None) -> int:
    """Copy in chunks; :class:`UploadError` (413) with ``message`` past ``budget`` bytes,
    :class:`Abandoned` once ``cancel`` is set."""
    used = 0
    while chunk := src.read(CHUNK):
        check(cancel)
        used += len(chunk)
        if used > budget:
            raise UploadError(message, 413)
        out.write(chunk)
    return used


def check(cancel: threading.Event | None) -> None:
    """:class:`Abandoned` if the client has gone."""
    if cancel is not None and cancel.is_set():
        raise Abandoned


def check_pixels(path: Path, limit: int) -> None:
    """413 for a JPEG or PNG whose header declares more than ``limit`` pixels, before any
    decoder allocates them; other files are left to the dataset's format check."""
    try:
        height, width = header_size(path) or (0, 0)
    except (ImageError, OSError):
        return  # not readable as declared: the decoder will say so
    if height * width > limit:
        raise UploadError(f"image of {width}x{height} pixels, more than the limit of {limit}",
                          413)


def safe_member(info: zipfile.ZipInfo) -> PurePosixPath:
    """The entry's relative path, or :class:`UploadError` if it could land outside the folder."""
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise UploadError(f"zip entry {name!r} points outside the archive's folder")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UploadError(f"zip entry {name!r} is a symbolic link")
    return path


def unzip(archive: Path, dest: Path, limits: Limits, cancel: threading.Event | None = None
          ) -> None:
    """Extract ``archive`` under ``dest`` (checked entries only), within ``limits``'
    ``max_zip_members``, ``max_zip_member_bytes`` and ``max_unpacked_bytes``."""
    with _zip_errors("not a readable zip archive"):
        zf = zipfile.ZipFile(archive)
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_zip_members:
            raise UploadError(f"zip holds {len(infos)} entries, more than the limit of "
                              f"{limits.max_zip_members}", 413)
        paths = [safe_member(info) for info in infos]  # all checked before anything is written
        for info in infos:
            if info.file_size > limits.max_zip_member_bytes:
                raise UploadError(f"zip entry {info.filename!r}: uncompressed size "
                                  f"{info.file_size} exceeds the limit of "
                                  f"{limits.max_zip_member_bytes} bytes per entry", 413)
        if sum(info.file_size for info in infos) > limits.max_unpacked_bytes:
            raise UploadError("zip: uncompressed size exceeds the limit of "
                              f"{limits.max_unpacked_bytes} bytes", 413)
        root = dest.resolve()
        budget = limits.max_unpacked_bytes
        for info, rel in zip(infos, paths, strict=True):
            check(cancel)
            with _zip_errors(f"zip entry {info.filename!r} cannot be unpacked"):
                target = (root / rel).resolve()
                if root not in target.parents:
                    raise UploadError(f"zip entry {info.filename!r} points outside the folder")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                cap = min(budget, limits.max_zip_member_bytes)
                with zf.open(info) as src, open(target, "xb") as out:
                    budget -= _copy_capped(src, out, cap, "zip: uncompressed size exceeds "
                                           f"the limit of {cap} bytes", cancel)


@contextlib.contextmanager
def _zip_errors(what: str) -> Iterator[None]:
    """Whatever :mod:`zipfile` and its decompressors (zlib, bz2, lzma) raise on hostile
    bytes, or the filesystem on a hostile entry name (too long, a file where a folder must
    be, twice the same), as a 422 starting with ``what``. A full disk stays an ``OSError``:
    the server's problem, not the upload's."""
    try:
        yield
    except (UploadError, Abandoned):
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise UploadError(f"{what} ({_first_line(exc)})", 422) from None
    except Exception as exc:  # the dependency's own, on bytes we do not trust
        raise UploadError(f"{what} ({_first_line(exc)})", 422) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def series_folder(root: Path, suffixes: tuple[str, ...]) -> Path:
    """The one folder under ``root`` holding files with ``suffixes`` (a zipped series folder)."""
    folders = sorted({p.parent for p in root.rglob("*")
                      if p.is_file() and p.name.lower().endswith(suffixes)})
    if not folders:
        raise UploadError(f"the zip holds no {' or '.join(suffixes)} files", 422)
    if len(folders) > 1:
        raise UploadError(f"the zip holds {' / '.join(suffixes)} files in {len(folders)} "
                          "folders; zip one series folder", 422)
    return folders[0]


# --------------------------------------------------------------------------------------------
# One upload, as the routes handle it
# --------------------------------------------------------------------------------------------

INTERNAL = "oncopipe-upload"  # the name an upload gets on disk (never the client's)


def client_name(filename: str | None) -> str:
    """The upload's base name, for the answer only (never logged, never used as a path)."""
    name = PurePosixPath((filename or "upload").replace("\\", "/")).name
    return name[:255] or "upload"


def _one_line(exc: BaseException | str, replace: dict[str, str]) -> str:
    text = str(exc) or type(exc).__name__
    for private, public in replace.items():
        text = text.replace(private, public)
    return text.strip().splitlines()[0]


class Upload:
    """An upload saved (and unpacked) in a private temporary folder, removed on exit."""

    def __init__(self, settings: Settings, spec: PredictInput, upload: UploadFile,
                 limits: Limits, cancel: threading.Event | None = None):
        """``spec``: the dataset's declared ``predict_input``; ``settings``: the upload size
        limit; ``limits``: the unpacking limits; ``cancel``: set when the client has gone."""
        self.settings, self.spec, self.upload = settings, spec, upload
        self.limits, self.cancel = limits, cancel
        self.name = client_name(upload.filename)
        self.folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        self.input: Path | None = None
        self.kept = False

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *exc) -> None:
        if not self.kept:
            shutil.rmtree(self.folder, ignore_errors=True)

    def keep(self) -> dict[str, str]:
        """Hand the folder to the caller (a kept upload, :mod:`.sessions`): it is no longer
        removed on exit. Returns what :meth:`public` replaces: private path -> client name."""
        self.kept = True
        private = [str(p) for p in (self.input, self.folder / "unpacked", self.folder) if p]
        return dict.fromkeys(private, self.name) | {INTERNAL: self.name}

    def path(self) -> Path:
        """The input as ``preprocess_one`` takes it: a file, or a series folder."""
        self.input = self._unpack()
        return self.input

    def _unpack(self) -> Path:
        spec, s, limits = self.spec, self.settings, self.limits
        if spec.kind == "series":
            archive = self.folder / f"{INTERNAL}.zip"
            save(self.upload.file, archive, s.max_upload, self.cancel)
            unzip(archive, self.folder / "unpacked", limits, self.cancel)
            archive.unlink()
            return series_folder(self.folder / "unpacked", spec.suffixes)
        suffix = suffix_of(self.name, spec.suffixes)
        if not re.fullmatch(r"(\.[a-z0-9]{1,8}){0,2}", suffix):
            suffix = ""
        path = self.folder / f"{INTERNAL}{suffix}"
        save(self.upload.file, path, s.max_upload, self.cancel)
        if spec.kind == "image":
            check_pixels(path, limits.max_image_pixels)
        return path

    def public(self, exc: BaseException | str) -> str:
        """``exc``'s message (or a warning's) with our temporary paths replaced by the
        client's file name."""
        private = [str(p) for p in (self.input, self.folder / "unpacked", self.folder) if p]
        text = _one_line(exc, dict.fromkeys(private, self.name))
        return re.sub(re.escape(INTERNAL) + r"[\w.-]*", lambda _: self.name, text)
