"""Uploads into a private temporary folder, safely: size limits, zip and gzip without surprises.

Everything an upload becomes is written under one :func:`tempfile.mkdtemp` folder that the
caller deletes after the answer. The names inside come from us, never from the client (only
the suffix is kept, to tell the format); zip entries are checked before anything is written:
no absolute paths, no ``..``, no links, a capped entry count, and a cap on the total
uncompressed size enforced while inflating (the sizes a zip header states can lie).
:class:`Upload` is one request's upload, as the routes use it; error messages it passes on
name the client's file, never a server path.
"""

from __future__ import annotations

import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO

from oncopipe.errors import InputError
from oncopipe.images import ImageError, header_size

if TYPE_CHECKING:
    from fastapi import UploadFile

    from oncopipe.datasets import PredictInput
    from oncopipe.serve.state import Settings

CHUNK = 1 << 20
MAX_ZIP_ENTRIES = 10_000


class UploadError(InputError):
    """The upload cannot be used; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def suffix_of(filename: str, suffixes: tuple[str, ...]) -> str:
    """The known suffix ``filename`` ends with (longest first: ``.nii.gz`` before ``.nii``),
    else its last one; lower case."""
    name = filename.lower()
    for s in sorted(suffixes, key=len, reverse=True):
        if name.endswith(s):
            return s
    return PurePosixPath(name.replace("\\", "/")).suffix


def save(stream: BinaryIO, dest: Path, limit: int) -> int:
    """Copy ``stream`` to ``dest``; :class:`UploadError` (413) beyond ``limit`` bytes."""
    with open(dest, "wb") as out:
        return _copy_capped(stream, out, limit,
                            f"upload larger than the limit of {limit} bytes")


def _copy_capped(src: BinaryIO, out: BinaryIO, budget: int, message: str) -> int:
    """Copy in chunks; :class:`UploadError` (413) with ``message`` past ``budget`` bytes."""
    used = 0
    while chunk := src.read(CHUNK):
        used += len(chunk)
        if used > budget:
            raise UploadError(message, 413)
        out.write(chunk)
    return used


def gunzip(src: Path, dest: Path, limit: int) -> None:
    """Inflate a gzip file with a cap on the output (a small .gz can inflate to terabytes)."""
    inflater = zlib.decompressobj(31)
    used = 0
    with open(src, "rb") as fh, open(dest, "wb") as out:
        while chunk := fh.read(CHUNK):
            while chunk:
                try:
                    data = inflater.decompress(chunk, CHUNK)
                except zlib.error as exc:
                    raise UploadError(f"corrupt gzip stream ({exc})", 422) from None
                used += len(data)
                if used > limit:
                    raise UploadError("gzip: uncompressed size exceeds the limit", 413)
                out.write(data)
                chunk = inflater.unconsumed_tail
            if inflater.eof:
                break
    if not inflater.eof:
        raise UploadError("truncated gzip stream", 422)


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


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


def unzip(archive: Path, dest: Path, limit: int) -> None:
    """Extract ``archive`` under ``dest`` (checked entries only)."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadError(f"not a readable zip archive ({exc})", 422) from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_ENTRIES:
            raise UploadError(f"zip holds {len(infos)} entries, more than {MAX_ZIP_ENTRIES}", 413)
        paths = [safe_member(info) for info in infos]  # all checked before anything is written
        if sum(info.file_size for info in infos) > limit:
            raise UploadError("zip: uncompressed size exceeds the limit", 413)
        root = dest.resolve()
        budget = limit
        for info, rel in zip(infos, paths, strict=True):
            target = (root / rel).resolve()
            if root not in target.parents:
                raise UploadError(f"zip entry {info.filename!r} points outside the folder")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "xb") as out:
                    budget -= _copy_capped(src, out, budget,
                                           "zip: uncompressed size exceeds the limit")
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise UploadError(f"zip entry {info.filename!r} cannot be read ({exc})",
                                  422) from None
            except FileExistsError:
                raise UploadError(f"zip entry {info.filename!r} appears twice") from None


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

    def __init__(self, settings: Settings, spec: PredictInput, upload: UploadFile):
        """``spec``: the dataset's ``PREDICT_INPUT``; ``settings``: the size limits."""
        self.settings, self.spec, self.upload = settings, spec, upload
        self.name = client_name(upload.filename)
        self.folder = Path(tempfile.mkdtemp(prefix="oncopipe-serve-"))
        self.input: Path | None = None

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def path(self) -> Path:
        """The input as ``preprocess_one`` takes it: a file, or a series folder."""
        self.input = self._unpack()
        return self.input

    def _unpack(self) -> Path:
        spec, s = self.spec, self.settings
        if spec.kind == "series":
            archive = self.folder / f"{INTERNAL}.zip"
            save(self.upload.file, archive, s.max_upload)
            unzip(archive, self.folder / "unpacked", s.max_unpacked)
            archive.unlink()
            return series_folder(self.folder / "unpacked", spec.suffixes)
        suffix = suffix_of(self.name, spec.suffixes)
        if not re.fullmatch(r"(\.[a-z0-9]{1,8}){0,2}", suffix):
            suffix = ""
        path = self.folder / f"{INTERNAL}{suffix}"
        save(self.upload.file, path, s.max_upload)
        if spec.kind == "volume" and is_gzip(path):  # whatever its name says
            inflated = self.folder / f"{INTERNAL}-inflated.nii"
            gunzip(path, inflated, s.max_unpacked)
            path.unlink()
            return inflated
        if spec.kind == "image":
            check_pixels(path, s.max_pixels)
        return path

    def public(self, exc: BaseException | str) -> str:
        """``exc``'s message (or a warning's) with our temporary paths replaced by the
        client's file name."""
        private = [str(p) for p in (self.input, self.folder / "unpacked", self.folder) if p]
        text = _one_line(exc, dict.fromkeys(private, self.name))
        return re.sub(re.escape(INTERNAL) + r"[\w.-]*", lambda _: self.name, text)
