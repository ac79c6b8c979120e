"""Where a DICOM slice keeps its pixels and how to rescale them, noted during the header pass.

Nearly every LIDC-IDRI slice is uncompressed little-endian 16-bit data: decoding it is reading
``Rows x Columns`` words at a fixed offset. :func:`read_header` reads a file's header once (no
pixels; :mod:`.header_scan` for the simple case, pydicom otherwise) and returns its values as
plain keyword -> value pairs (every check reads those, not pydicom's dataset) and, beside them,
a :class:`PixelLayout`: that offset, the stored dtype, the rescale and padding values, and what
identifies the file as it was (its size and a hash of every byte before the pixel values).
:mod:`.pixels` then reads the pixels without parsing the file again. Files that are not plain
(compressed or deflated transfer syntaxes, big-endian, BitsAllocated other than 16, colour or
multi-frame, a Modality LUT Sequence, a Pixel Data length other than Rows x Columns x 2) get an
empty ``dtype``: pydicom decodes them.

Every file is hostile until read: :func:`open_dicom` checks its size against
``limits.max_dicom_bytes`` before pydicom sees it and clamps every read to what the file holds
(a corrupt 4 GiB length field must not become a 4 GiB buffer; the header pass's parse of a
file's first bytes in memory cannot read past them either), a deflated dataset is inflated
once into nothing to check its size before pydicom inflates it whole, and
:func:`read_dataset` converts every element inside the reject boundary (pydicom converts
values lazily, on first access, and raises there).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.tag import BaseTag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from oncopipe.core import limits
from oncopipe.core.errors import DecodeError, RejectError, bad_bytes_reject
from oncopipe.datasets.lidc import header_scan

LAYOUT_TAGS = ["Rows", "Columns", "SamplesPerPixel", "NumberOfFrames", "BitsAllocated",
               "BitsStored", "PixelRepresentation", "PhotometricInterpretation", "RescaleSlope",
               "RescaleIntercept", "PixelPaddingValue", "PixelPaddingRangeLimit",
               "ModalityLUTSequence"]
Values = Mapping[str, Any]  # a header's element values by keyword: see :func:`header_values`
_PLAIN_SYNTAXES = {ExplicitVRLittleEndian: False, ImplicitVRLittleEndian: True}  # -> implicit
_PIXEL_DATA_TAG = struct.pack("<HH", 0x7FE0, 0x0010)
_MAX_HASHED = 1 << 20  # no pixel value found: hash at most the first MB


@dataclass(frozen=True, slots=True)
class PixelLayout:
    """How one file stores its pixels, as the header pass saw it.

    ``dtype`` is ``"<i2"`` or ``"<u2"`` when the pixel values are plain little-endian 16-bit
    words starting at byte ``header_bytes``; empty when pydicom has to decode them. ``size``
    and ``header_hash`` (of bytes ``[0, header_bytes)``) identify the file as it was read.
    Slope and intercept are as ``series.read_slice_hu`` applies them; padding is
    :func:`padding_range`, which it uses too.
    """

    size: int
    header_bytes: int
    header_hash: str
    dtype: str
    bits_stored: int
    slope: float
    intercept: float
    pad_lo: int | None  # padding range as stored (a single value: pad_lo == pad_hi)
    pad_hi: int | None

    @property
    def plain(self) -> bool:
        return bool(self.dtype)


def header_hash(header: bytes | bytearray | memoryview) -> str:
    return hashlib.blake2b(header, digest_size=8).hexdigest()


class _Bounded(io.BufferedReader):
    """A file whose ``read(n)`` never asks for more than what is left of it: CPython allocates
    the ``n`` bytes asked for before reading, so a corrupt length field would otherwise cost a
    buffer of up to 4 GiB before the short read is noticed."""

    def __init__(self, raw: io.FileIO, size: int) -> None:
        super().__init__(raw)
        self._size = size

    def read(self, n: int | None = -1) -> bytes:
        if n is not None and n > 0:
            n = min(n, max(self._size - self.tell(), 0))
        return super().read(n)


@contextlib.contextmanager
def open_dicom(path: Path) -> Iterator[tuple[BinaryIO, int]]:
    """``path`` opened for pydicom and its size, once the size is within
    ``limits.max_dicom_bytes`` (else :class:`~oncopipe.core.errors.LimitError`)."""
    size = os.stat(path).st_size
    limits.active().check("max_dicom_bytes", size, path)
    with _Bounded(io.FileIO(os.fspath(path), "rb"), size) as fp:
        yield fp, size


def read_dataset(fp: BinaryIO, path: Path, *, deflated: bool = True,
                 **kwargs: Any) -> pydicom.Dataset:
    """``pydicom.dcmread(fp, **kwargs)`` with every element converted: whatever pydicom or
    zlib raises on the bytes is a :class:`~oncopipe.core.errors.DecodeError` naming ``path``
    (``unreadable DICOM: ...``), a deflated dataset inflating past ``max_dicom_bytes`` a
    :class:`~oncopipe.core.errors.LimitError`. ``deflated=False``: the caller knows the bytes
    cannot declare the deflated transfer syntax, and its inflated size is not checked."""
    with bad_bytes_reject(path, "unreadable DICOM: parsing"):
        try:
            if deflated:
                _check_inflated(fp, path)
            ds = pydicom.dcmread(fp, **kwargs)
            for _ in ds.iterall():  # pydicom converts values lazily and raises there
                pass
            meta = getattr(ds, "file_meta", None)
            for _ in meta if meta is not None else ():
                pass
            syntax = meta.get("TransferSyntaxUID") if meta is not None else None
            if syntax is not None and not isinstance(syntax, str):
                raise DecodeError(f"{path}: unreadable DICOM: TransferSyntaxUID {syntax} is not "
                                  "one UID")
        except (InvalidDicomError, OSError, ValueError, EOFError, zlib.error) as exc:
            detail = " ".join(str(exc).split())[:200]
            raise DecodeError(f"{path}: unreadable DICOM: {detail}") from None
    return ds


def _check_inflated(fp: BinaryIO, path: Path) -> None:
    """For the deflated transfer syntax, inflate the dataset into nothing and check its size
    against ``limits.max_dicom_bytes`` (pydicom inflates it whole, in memory). Rewinds."""
    fp.seek(0)
    read_preamble(fp, False)
    syntax = _read_file_meta_info(fp).get("TransferSyntaxUID")
    if syntax == DeflatedExplicitVRLittleEndian:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        total, limit = 0, limits.active()
        while chunk := fp.read(1 << 20):
            while chunk:
                total += len(inflater.decompress(chunk, 1 << 20))
                limit.check("max_dicom_bytes", total, f"{path} (inflated dataset)")
                chunk = inflater.unconsumed_tail
    fp.seek(0)


def read_header(path: Path, tags: Iterable[str], *, head: tuple[bytes, int] | None = None,
                scan: bool = True) -> tuple[dict[str, Any], PixelLayout]:
    """One file's header values (``tags`` + :data:`LAYOUT_TAGS`, no pixels; see
    :func:`header_values`) and its pixel layout.

    ``head``: the file's first bytes and its size, when the caller has read them through
    :func:`open_dicom` (which checked the size). A plain file's header (:mod:`.header_scan`)
    is read from its first bytes without pydicom, from ``head`` without opening the file again
    (``scan=False``: never; the values are then pydicom's own objects, which a reject's
    message shows). Otherwise
    pydicom parses the file's first :data:`_HEAD_BYTES`, read at once, from memory: a file's
    many small reads and position queries are then no system calls. That parse is kept when it
    succeeds and never asked for a byte past them (or they are the whole file), so it read
    exactly what parsing the file reads; otherwise (a reject included, so that its message is
    the file's) the file itself is parsed. Bytes without the deflated transfer syntax's UID
    cannot declare it: their parse skips the inflated-size check and its second read of the
    file meta (pydicom reads it again).

    Raises :class:`~oncopipe.core.errors.RejectError` naming the file when it cannot be read.
    """
    keys = tuple(dict.fromkeys([*tags, *LAYOUT_TAGS]))
    wanted = keyword_tags(keys)
    if scan and head is not None and (found := _scanned(*head, keys)) is not None:
        return found
    with open_dicom(path) as (fp, size):
        try:
            data = fp.read(_HEAD_BYTES)
            unseen = head is None or len(data) > len(head[0])  # more than the caller's bytes
            found = _scanned(data, size, keys) if scan and unseen else None
            if found is not None:
                return found
            buffer: _Head | None = _Head(data)
        except OSError:  # reported as parsing the file reports it
            buffer = None
        if buffer is not None:
            try:
                found = _header_from(buffer, path, wanted, size,
                                     deflated=DeflatedExplicitVRLittleEndian.encode() in data)
            except RejectError:
                pass
            else:
                if len(data) == size or not buffer.short:
                    return found
        fp.seek(0)
        return _header_from(fp, path, wanted, size)


_HEAD_BYTES = 1 << 16  # CT headers mostly end within 8 KB; a longer one costs a second parse


def scan_header(data: bytes, size: int, tags: Iterable[str]
                ) -> tuple[dict[str, Any], PixelLayout] | None:
    """:func:`read_header` of a file of ``size`` bytes from its first bytes ``data`` by
    :mod:`.header_scan` alone (None where it leaves the file to pydicom)."""
    return _scanned(data, size, tuple(dict.fromkeys([*tags, *LAYOUT_TAGS])))


def _scanned(data: bytes, size: int, keys: tuple[str, ...]
             ) -> tuple[dict[str, Any], PixelLayout] | None:
    """:func:`read_header` of a plain file's first bytes ``data`` by :mod:`.header_scan`
    (None: not a file it reads, or not plain: pydicom parses it)."""
    found = header_scan.scan(data, _scan_table(keys))
    if found is None:
        return None
    values, at, implicit = found
    value_at, length = _pixel_value(data[at:at + 12], at, implicit)
    if value_at is None:
        return None
    layout = _layout(values, size, value_at, header_hash(data[:value_at]), value_at, length)
    return (values, layout) if layout.plain else None


@functools.cache
def _scan_table(keys: tuple[str, ...]) -> dict[int, header_scan.Wanted]:
    """:func:`.header_scan.wanted` of the keywords ``keys``, built once."""
    return header_scan.wanted(keyword_tags(keys))


class _Head(io.BytesIO):
    """A file's first bytes; ``short`` once a read has been given fewer bytes than it asked
    for (or asked for all that is left), i.e. once the parse may have wanted bytes past them."""

    short = False

    def read(self, n: int | None = -1, /) -> bytes:
        data = super().read(n)
        if len(data) != n:
            self.short = True
        return data


def _header_from(fp: BinaryIO, path: Path, wanted: dict[BaseTag, str], size: int,
                 deflated: bool = True) -> tuple[dict[str, Any], PixelLayout]:
    """:func:`read_header` of the bytes ``fp`` reads (the file, or its first bytes)."""
    ds = read_dataset(fp, path, deflated=deflated, stop_before_pixels=True,
                      specific_tags=list(wanted))
    values = header_values(ds, wanted)
    at = fp.tell()  # pydicom rewinds to the start of the Pixel Data element
    element = fp.read(12)
    syntax = values["TransferSyntaxUID"]
    value_at, length = _pixel_value(element, at, _PLAIN_SYNTAXES.get(syntax))
    hashed = value_at if value_at is not None else min(at, _MAX_HASHED)
    fp.seek(0)
    digest = header_hash(fp.read(hashed))
    return values, _layout(values, size, hashed, digest, value_at, length)


@functools.cache
def keyword_tags(keywords: tuple[str, ...]) -> dict[BaseTag, str]:
    """Tag -> keyword of DICOM ``keywords``, looked up once rather than on every access."""
    tags = {}
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"{keyword} is not a DICOM keyword")
        tags[BaseTag(tag)] = keyword
    return tags


def header_values(ds: pydicom.Dataset, tags: Mapping[BaseTag, str]) -> dict[str, Any]:
    """The values of ``ds``'s top-level elements among ``tags`` (from :func:`keyword_tags`) by
    keyword, and the file meta's ``TransferSyntaxUID`` (None when absent).

    For those keywords ``name in values``, ``values[name]`` and ``values.get(name, default)``
    are what ``name in ds``, ``ds[name].value`` and ``ds.get(name, default)`` give (the same
    objects), without pydicom's keyword lookup on every access. ``ds`` comes from
    :func:`read_dataset`, which has converted every element.
    """
    values = {tags[elem.tag]: elem.value for elem in ds.values() if elem.tag in tags}
    meta = getattr(ds, "file_meta", None)
    values["TransferSyntaxUID"] = meta.get("TransferSyntaxUID") if meta is not None else None
    return values


def _pixel_value(element: bytes, at: int, implicit: bool | None) -> tuple[int | None, int]:
    """Offset and length of the Pixel Data value whose element starts at ``at``, if plain."""
    if implicit is None or len(element) < 8 or element[:4] != _PIXEL_DATA_TAG:
        return None, 0
    if implicit:
        return at + 8, struct.unpack("<I", element[4:8])[0]
    if element[4:6] not in (b"OW", b"OB") or len(element) < 12:
        return None, 0
    return at + 12, struct.unpack("<I", element[8:12])[0]


def padding_range(values: Values) -> tuple[int, int] | None:
    """The padding range ``(lo, hi)`` as the pixels store it (None: no PixelPaddingValue).

    The one definition of padding both pixel paths use (:mod:`.pixels` through
    :class:`PixelLayout`, ``series.read_slice_hu`` directly). PixelPaddingValue is US or SS by
    the data's sign, but LIDC writes -2000 as US 63536 in signed data: a value above the
    signed range is read as its two's complement. With PixelPaddingRangeLimit the range runs
    between the two values, whichever is larger.
    """
    pad = values.get("PixelPaddingValue")
    if pad is None:
        return None
    bits = int(values.get("BitsStored", 16))
    signed = int(values.get("PixelRepresentation", 0)) == 1

    def stored(value: int) -> int:
        return value - 2 ** bits if signed and value >= 2 ** (bits - 1) else value

    limit = values.get("PixelPaddingRangeLimit")
    lo = hi = stored(int(pad))
    if limit is not None:
        lo, hi = sorted((lo, stored(int(limit))))
    return lo, hi


def _layout(values: Values, size: int, hashed: int, digest: str, value_at: int | None,
            length: int) -> PixelLayout:
    try:
        slope = float(values.get("RescaleSlope", 1) or 1)
        intercept = float(values.get("RescaleIntercept", 0) or 0)
        rows, cols = int(values.get("Rows", 0)), int(values.get("Columns", 0))
        bits = int(values.get("BitsStored", 16))
        signed = int(values.get("PixelRepresentation", 0))
        pad_lo, pad_hi = padding_range(values) or (None, None)
        plain = (value_at is not None and value_at + length <= size
                 and length == rows * cols * 2 > 0 and int(values.get("BitsAllocated", 0)) == 16
                 and 1 <= bits <= 16 and signed in (0, 1)
                 and int(values.get("SamplesPerPixel", 1)) == 1
                 and int(values.get("NumberOfFrames", 1) or 1) == 1
                 and str(values.get("PhotometricInterpretation", "MONOCHROME2")).strip()
                 in ("MONOCHROME1", "MONOCHROME2")
                 and "ModalityLUTSequence" not in values)
    except (TypeError, ValueError, OverflowError):  # odd values: the pydicom path reports them
        return PixelLayout(size, hashed, digest, "", 16, 1.0, 0.0, None, None)
    dtype = ("<i2" if signed else "<u2") if plain else ""
    return PixelLayout(size, hashed, digest, dtype, bits, slope, intercept, pad_lo, pad_hi)
