"""Where a DICOM slice keeps its pixels and how to rescale them, noted during the header pass.

Nearly every LIDC-IDRI slice is uncompressed little-endian 16-bit data: decoding it is reading
``Rows x Columns`` words at a fixed offset. :func:`read_header` reads a file's header once (no
pixels) and returns, beside it, a :class:`PixelLayout`: that offset, the stored dtype, the
rescale and padding values, and what identifies the file as it was (its size and a hash of
every byte before the pixel values). :mod:`.pixels` then reads the pixels without parsing the
file again. Files that are not plain (compressed or deflated transfer syntaxes, big-endian,
BitsAllocated other than 16, colour or multi-frame, a Modality LUT Sequence, a Pixel Data
length other than Rows x Columns x 2) get an empty ``dtype``: pydicom decodes them.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

LAYOUT_TAGS = ["Rows", "Columns", "SamplesPerPixel", "NumberOfFrames", "BitsAllocated",
               "BitsStored", "PixelRepresentation", "PhotometricInterpretation", "RescaleSlope",
               "RescaleIntercept", "PixelPaddingValue", "PixelPaddingRangeLimit",
               "ModalityLUTSequence"]
_PLAIN_SYNTAXES = {ExplicitVRLittleEndian: False, ImplicitVRLittleEndian: True}  # -> implicit
_PIXEL_DATA_TAG = struct.pack("<HH", 0x7FE0, 0x0010)
_MAX_HASHED = 1 << 20  # no pixel value found: hash at most the first MB


@dataclass(frozen=True)
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


def read_header(path: Path, tags: list[str]) -> tuple[pydicom.Dataset, PixelLayout]:
    """One file's header (``tags`` + :data:`LAYOUT_TAGS`, no pixels) and its pixel layout."""
    with open(path, "rb") as fp:
        ds = pydicom.dcmread(fp, stop_before_pixels=True,
                             specific_tags=list(dict.fromkeys(tags + LAYOUT_TAGS)))
        at = fp.tell()  # pydicom rewinds to the start of the Pixel Data element
        size = os.fstat(fp.fileno()).st_size
        element = fp.read(12)
        meta = getattr(ds, "file_meta", None)
        syntax = meta.get("TransferSyntaxUID") if meta is not None else None
        value_at, length = _pixel_value(element, at, _PLAIN_SYNTAXES.get(syntax))
        hashed = value_at if value_at is not None else min(at, _MAX_HASHED)
        fp.seek(0)
        digest = header_hash(fp.read(hashed))
    return ds, _layout(ds, size, hashed, digest, value_at, length)


def _pixel_value(element: bytes, at: int, implicit: bool | None) -> tuple[int | None, int]:
    """Offset and length of the Pixel Data value whose element starts at ``at``, if plain."""
    if implicit is None or len(element) < 8 or element[:4] != _PIXEL_DATA_TAG:
        return None, 0
    if implicit:
        return at + 8, struct.unpack("<I", element[4:8])[0]
    if element[4:6] not in (b"OW", b"OB") or len(element) < 12:
        return None, 0
    return at + 12, struct.unpack("<I", element[8:12])[0]


def padding_range(ds: pydicom.Dataset) -> tuple[int, int] | None:
    """The padding range ``(lo, hi)`` as the pixels store it (None: no PixelPaddingValue).

    The one definition of padding both pixel paths use (:mod:`.pixels` through
    :class:`PixelLayout`, ``series.read_slice_hu`` directly). PixelPaddingValue is US or SS by
    the data's sign, but LIDC writes -2000 as US 63536 in signed data: a value above the
    signed range is read as its two's complement. With PixelPaddingRangeLimit the range runs
    between the two values, whichever is larger.
    """
    pad = ds.get("PixelPaddingValue")
    if pad is None:
        return None
    bits = int(ds.get("BitsStored", 16))
    signed = int(ds.get("PixelRepresentation", 0)) == 1

    def stored(value: int) -> int:
        return value - 2 ** bits if signed and value >= 2 ** (bits - 1) else value

    limit = ds.get("PixelPaddingRangeLimit")
    lo = hi = stored(int(pad))
    if limit is not None:
        lo, hi = sorted((lo, stored(int(limit))))
    return lo, hi


def _layout(ds: pydicom.Dataset, size: int, hashed: int, digest: str, value_at: int | None,
            length: int) -> PixelLayout:
    try:
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
        bits = int(ds.get("BitsStored", 16))
        signed = int(ds.get("PixelRepresentation", 0))
        pad_lo, pad_hi = padding_range(ds) or (None, None)
        plain = (value_at is not None and value_at + length <= size
                 and length == rows * cols * 2 > 0 and int(ds.get("BitsAllocated", 0)) == 16
                 and 1 <= bits <= 16 and signed in (0, 1)
                 and int(ds.get("SamplesPerPixel", 1)) == 1
                 and int(ds.get("NumberOfFrames", 1) or 1) == 1
                 and str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
                 in ("MONOCHROME1", "MONOCHROME2")
                 and "ModalityLUTSequence" not in ds)
    except (TypeError, ValueError):  # odd values: the pydicom path reports them
        return PixelLayout(size, hashed, digest, "", 16, 1.0, 0.0, None, None)
    dtype = ("<i2" if signed else "<u2") if plain else ""
    return PixelLayout(size, hashed, digest, dtype, bits, slope, intercept, pad_lo, pad_hi)
