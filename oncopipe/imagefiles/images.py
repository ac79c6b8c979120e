"""Decoding 2D image files (TIF, JPEG, PNG) into channel-first uint8 arrays, fast.

OpenCV decodes all three formats; for JPEG it can decode at 1/2, 1/4 or 1/8 scale directly
from the DCT coefficients (``IMREAD_REDUCED_*``), 3-4x faster than a full decode followed by
a resize, which matters for the multi-thousand-pixel ISIC photographs. :func:`read_rgb`
picks the largest reduction that still leaves the image at least ``min_side`` pixels on its
shorter side, so the final resize only ever shrinks.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import struct
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from oncopipe.core import limits
from oncopipe.core.errors import RejectError, bad_bytes_reject

log = logging.getLogger(__name__)

_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}


class ImageError(RejectError):
    """A file could not be decoded as an image; the message names the file."""


class CorruptImageError(ImageError):
    """The codec decoded a file but reported damaged data (OpenCV returns an image anyway)."""

    def __init__(self, path: Path, detail: str):
        super().__init__(f"{path}: corrupt image data ({detail})")
        self.detail = detail


# libjpeg's warnings about damaged data: it fills what it could not decode with grey and
# carries on, and OpenCV returns that image as if nothing happened
_CORRUPT = re.compile(r"corrupt jpeg data|premature end of jpeg file|huffman|"
                      r"inconsistent progression|invalid sos", re.IGNORECASE)
_capture_lock = threading.Lock()
_sink: tuple[int, IO[bytes]] | None = None  # (pid, temporary file): one per process


_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                          0xCE, 0xCF})
_SOS, _EOI = 0xDA, 0xD9
# markers without a length field: TEM, RST0-7, SOI
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
_FILL = re.compile(rb"\xff+")  # fill bytes may precede any marker
# segments before the first scan: a camera file has a few dozen (APPn, DQT, SOF, DHT, DRI,
# COM; an ICC profile in at most 255 APP2 chunks); a file with more is built to be slow
_JPEG_MAX_SEGMENTS = 1000
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# TIFF tags read from the first directory, and the field types that hold an integer
_TIFF_TAGS = {256: "width", 257: "height", 258: "bits", 259: "compression",
              277: "samples", 322: "tile_width", 323: "tile_height"}
_TIFF_INT = {1: "B", 3: "H", 4: "I"}  # BYTE, SHORT, LONG
_TIFF_BITS = (1, 2, 4, 8, 16)  # what the releases and OpenCV's 8-bit colour output use
_TIFF_MAX_SAMPLES = 4  # grey, grey + alpha, RGB, RGBA


@dataclass(frozen=True)
class Header:
    """What an image file declares before any pixel is decoded."""

    format: str  # "JPEG", "PNG" or "TIFF"
    height: int
    width: int

    @property
    def pixels(self) -> int:
        return self.height * self.width


class HeaderError(ImageError):
    """The header of a PNG, JPEG or TIFF is malformed; ``detail`` says how, without the path."""

    def __init__(self, path: Path, detail: str):
        super().__init__(f"{path}: {detail}")
        self.detail = detail


def read_header(path: str | Path) -> Header | None:
    """The declared format and size of a PNG, JPEG or TIFF, read without decoding a pixel;
    ``None`` for any other content (an empty file included).

    Every offset and length the file declares is checked against the file's size before it
    is followed, so a hostile header cannot send the reader out of the file or round in a
    loop; raises :class:`HeaderError` saying what is wrong. The file is mapped, not read:
    a JPEG's marker walk touches only the pages it looks at.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 8:
            head = fh.read(8)
            if head.startswith(b"\xff\xd8"):
                raise HeaderError(path, "JPEG without a readable frame header")
            return None
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            head = buf[:8]
            if head == _PNG_SIGNATURE:
                return _png_header(path, buf)
            if head[:2] == b"\xff\xd8":
                return _jpeg_header(path, buf)
            if head[:4] in (b"II*\x00", b"MM\x00*"):
                return _tiff_header(path, buf)
    return None


def _checked(path: Path, fmt: str, height: int, width: int) -> Header:
    if height <= 0 or width <= 0:
        raise HeaderError(path, f"{fmt} declares a size of {height}x{width} pixels")
    return Header(fmt, height, width)


def _png_header(path: Path, buf: mmap.mmap) -> Header:
    if len(buf) < 33 or buf[8:16] != b"\x00\x00\x00\x0dIHDR":
        raise HeaderError(path, "PNG without an IHDR chunk first")
    width, height = struct.unpack_from(">II", buf, 16)
    return _checked(path, "PNG", height, width)


class _CutShort(HeaderError):
    """The file ends inside the JPEG's marker segments, before its first scan."""


def _jpeg_walk(path: Path, buf: mmap.mmap) -> tuple[Header, int]:
    """The frame size (SOF) and the offset where the first scan's data starts.

    Walks the marker segments from SOI by their declared lengths, as a decoder does: an
    EXIF thumbnail inside APP1 (a whole JPEG with its own markers) is skipped, not read. A
    length below 2 (which would step backwards), bytes between segments, or no frame header
    before the first scan is a :class:`HeaderError`; the file ending first, :class:`_CutShort`.
    """
    pos, size, header = 2, len(buf), None
    for _ in range(_JPEG_MAX_SEGMENTS):
        if pos + 1 < size and buf[pos] == 0xFF and buf[pos + 1] == 0xFF:
            pos = _FILL.match(buf, pos).end() - 1
        if pos + 4 > size:
            raise _CutShort(path, "JPEG cut short before its first scan")
        if buf[pos] != 0xFF:
            raise HeaderError(path, f"JPEG marker segments broken at byte {pos}")
        code = buf[pos + 1]
        if code in _STANDALONE:
            pos += 2
            continue
        length = int.from_bytes(buf[pos + 2:pos + 4], "big")
        if code == _EOI or (code == _SOS and header is None):
            break
        if length < 2:
            raise HeaderError(path, f"JPEG segment at byte {pos} declares length {length}")
        if code in _SOF_MARKERS and header is None:
            if pos + 9 > size:
                raise _CutShort(path, "JPEG cut short in its frame header")
            height, width = struct.unpack_from(">HH", buf, pos + 5)
            header = _checked(path, "JPEG", height, width)
        pos += 2 + length
        if code == _SOS:
            return header, pos
    else:
        raise HeaderError(path, f"JPEG with more than {_JPEG_MAX_SEGMENTS} segments before "
                                "its first scan")
    raise HeaderError(path, "JPEG without a readable frame header")


def _jpeg_header(path: Path, buf: mmap.mmap) -> Header:
    return _jpeg_walk(path, buf)[0]


def _tiff_header(path: Path, buf: mmap.mmap) -> Header:
    """The first image directory of a classic TIFF, every offset checked against the file."""
    order = "<" if buf[:2] == b"II" else ">"
    size = len(buf)
    (ifd,) = struct.unpack_from(order + "I", buf, 4)
    if ifd < 8 or ifd + 2 > size:
        raise HeaderError(path, f"TIFF directory offset {ifd} outside the file ({size} bytes)")
    (count,) = struct.unpack_from(order + "H", buf, ifd)
    if ifd + 2 + 12 * count > size:
        raise HeaderError(path, f"TIFF directory of {count} entries runs past the end of the "
                                f"file ({size} bytes)")
    found: dict[str, list[int]] = {}
    for i in range(count):
        tag, kind, n, value = struct.unpack_from(order + "HHI4s", buf, ifd + 2 + 12 * i)
        name = _TIFF_TAGS.get(tag)
        if name is None:
            continue
        code = _TIFF_INT.get(kind)
        if code is None or n == 0:
            raise HeaderError(path, f"TIFF tag {tag} has type {kind} and {n} values, "
                                    "not an integer")
        width_bytes = struct.calcsize(code)
        n_read = min(n, _TIFF_MAX_SAMPLES + 1)  # enough to tell that there are too many
        if n * width_bytes <= 4:
            data = value
        else:
            (offset,) = struct.unpack(order + "I", value)
            if offset + n * width_bytes > size:
                raise HeaderError(path, f"TIFF tag {tag} points past the end of the file")
            data = buf[offset:offset + n_read * width_bytes]
        found[name] = list(struct.unpack_from(f"{order}{n_read}{code}", data))
    if "width" not in found or "height" not in found:
        raise HeaderError(path, "TIFF without ImageWidth and ImageLength")
    header = _checked(path, "TIFF", found["height"][0], found["width"][0])
    samples = found.get("samples", [1])[0]
    bits = found.get("bits", [1])
    if not 1 <= samples <= _TIFF_MAX_SAMPLES or any(b not in _TIFF_BITS for b in bits):
        raise HeaderError(path, f"TIFF of {samples} samples of {bits} bits per pixel; "
                                f"expected 1 to {_TIFF_MAX_SAMPLES} samples of 1 to 16 bits")
    for side, image_side in (("tile_width", header.width), ("tile_height", header.height)):
        if side in found and not 0 < found[side][0] <= image_side + 15:
            raise HeaderError(path, f"TIFF {side.replace('_', ' ')} {found[side][0]} is not "
                                    f"within the image's {image_side} pixels")
    if found.get("compression", [1])[0] == 1:  # uncompressed: the pixels must be in the file
        need = header.pixels * samples * max(bits) // 8
        if need > size:
            raise HeaderError(path, f"uncompressed TIFF declares {need:,} bytes of pixels but "
                                    f"the file holds {size:,}")
    return header


def jpeg_complete(path: str | Path) -> bool:
    """Whether a JPEG (or an empty file) reaches its end-of-image marker.

    A JPEG whose download was cut short lacks it; OpenCV would decode it anyway, filling
    the missing rows with grey, so this is checked before decoding. The marker is looked for
    after the start of the first scan (found by :func:`_jpeg_walk`, so an EXIF thumbnail's
    own end marker does not count); in entropy-coded data every 0xFF byte is followed by 0x00
    or a restart code, so the first 0xFF 0xD9 there is the end. Bytes after it (camera and
    editor trailers, of any length) are legal and ignored by decoders. A file that ends
    before its first scan is not complete; one whose segments are malformed raises
    :class:`HeaderError`.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size < 4:
            return False
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                _, data = _jpeg_walk(path, buf)
            except _CutShort:
                return False
            return buf.find(b"\xff\xd9", data) >= 0


def header_size(path: str | Path) -> tuple[int, int] | None:
    """(height, width) of a PNG, JPEG or TIFF from its header (:func:`read_header`)."""
    header = read_header(path)
    return None if header is None else (header.height, header.width)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the header; :class:`ImageError` for any other format."""
    size = header_size(path)
    if size is None:
        raise ImageError(f"{path}: not a JPEG, PNG or TIFF image")
    return size


_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (_PNG_SIGNATURE, "PNG"), (b"II*\x00", "TIFF"),
          (b"MM\x00*", "TIFF"), (b"BM", "BMP"), (b"GIF8", "GIF"))


def image_format(path: str | Path) -> str | None:
    """"JPEG", "PNG", "TIFF", "BMP" or "GIF" from the file's first bytes, else ``None``.

    The content decides, not the suffix: a PCam ``.tif`` renamed ``.jpg`` is still a TIFF,
    and OpenCV would decode it without complaint.
    """
    with open(path, "rb") as fh:
        head = fh.read(8)
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def read_rgb(path: str | Path, min_side: int | None = None) -> np.ndarray:
    """Decode ``path`` to a (3, H, W) uint8 RGB array.

    Only PNG, JPEG and TIFF are decoded, and only after their header's size has passed
    ``limits.max_image_pixels``: OpenCV decodes many more formats, each a way to declare a
    huge image in a small file. With ``min_side``, JPEGs are decoded at the coarsest 1/2^k
    scale whose shorter side is still >= ``min_side``. Raises :class:`ImageError` (and
    :class:`~oncopipe.core.errors.LimitError` for a size over the limit).
    """
    path = Path(path)
    try:
        header = read_header(path)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if header is None:
        raise ImageError(f"{path}: not a JPEG, PNG or TIFF image")
    limits.active().check("max_image_pixels", header.pixels, path)
    flag = cv2.IMREAD_COLOR
    if min_side and header.format == "JPEG":
        for factor in (8, 4, 2):
            if min(header.height, header.width) // factor >= min_side:
                flag = _REDUCED[factor]
                break
    with bad_bytes_reject(path, "image decoding", ImageError):
        img, messages = _imread(path, flag)
    if img is None:
        raise ImageError(f"{path}: not a readable image")
    corrupt = [m for m in messages if _CORRUPT.search(m)]
    if corrupt:
        raise CorruptImageError(path, "; ".join(corrupt))
    for message in messages:  # e.g. a libpng or libtiff warning: said once, with the file name
        log.warning("%s: decoder warning: %s", path, message)
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB).transpose(2, 0, 1))


def resize_chw(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a (C, H, W) uint8 image; area interpolation when shrinking, linear otherwise."""
    c, h, w = img.shape
    if (h, w) == (height, width):
        return img
    interp = cv2.INTER_AREA if h >= height and w >= width else cv2.INTER_LINEAR
    hwc = cv2.resize(np.ascontiguousarray(img.transpose(1, 2, 0)), (width, height),
                     interpolation=interp)
    return np.ascontiguousarray(hwc.reshape(height, width, c).transpose(2, 0, 1))


def _imread(path: Path, flag: int) -> tuple[np.ndarray | None, list[str]]:
    """``cv2.imread`` and the lines its codec libraries printed on stderr meanwhile.

    libjpeg, libpng and libtiff report damaged data only as text on file descriptor 2, with
    no file name and no flag in OpenCV's result; so descriptor 2 is pointed at a temporary
    file for the duration of the call (a lock keeps threads of one process apart) and the
    messages come back to the caller, which rejects the file or logs them with its name.
    """
    global _sink
    with _capture_lock:
        if _sink is None or _sink[0] != os.getpid():  # a forked worker needs its own file
            _sink = (os.getpid(), tempfile.TemporaryFile())  # noqa: SIM115 (kept open)
        sink = _sink[1]
        sink.seek(0)
        sink.truncate()
        sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no descriptor 2 (a daemon): nothing would be printed anyway
            return cv2.imread(str(path), flag), []
        try:
            os.dup2(sink.fileno(), 2)
            img = cv2.imread(str(path), flag)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        text = sink.read().decode("utf-8", "replace")
    return img, [line.strip() for line in text.splitlines() if line.strip()]
