"""Decoding 2D image files (TIF, JPEG, PNG) into channel-first uint8 arrays, fast.

OpenCV decodes all three formats; for JPEG it can decode at 1/2, 1/4 or 1/8 scale directly
from the DCT coefficients (``IMREAD_REDUCED_*``), 3-4x faster than a full decode followed by
a resize, which matters for the multi-thousand-pixel ISIC photographs. :func:`decode`
picks the largest reduction that still leaves the image at least ``min_side`` pixels on its
shorter side, so the final resize only ever shrinks.

Per file, the bytes are read once (:func:`file_bytes`) and every check (format, header,
JPEG end marker) and the decode itself work on those bytes. An uncompressed 8-bit RGB TIFF
(PCam's patches) whose pixels lie in one run is not decoded at all: its pixels are those
bytes (:attr:`Header.raw_offset`), exactly what OpenCV would return. Images stay in the
decoder's (H, W, 3) layout through any resize; :func:`to_chw` makes the one channel-first
RGB copy at the end. The codec libraries' messages are captured per batch of files
(:class:`CodecMessages`), not per file.
"""

from __future__ import annotations

import functools
import logging
import mmap
import os
import re
import struct
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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
_TIFF_WIDTH = {"B": 1, "H": 2, "I": 4}
_TIFF_BITS = (1, 2, 4, 8, 16)  # what the releases and OpenCV's 8-bit colour output use
_TIFF_MAX_SAMPLES = 4  # grey, grey + alpha, RGB, RGBA
# tags that decide whether the pixels can be taken as they lie in the file, with the value
# that allows it (absent: the TIFF default, which allows it); any other value, or any of
# _TIFF_NOT_RAW present, sends the file to OpenCV
_TIFF_RAW_TAGS = {262: 2, 266: 1, 274: 1, 284: 1, 317: 1, 339: 1}  # RGB, fill order,
# orientation, chunky planes, no predictor, unsigned integers
_TIFF_NOT_RAW = frozenset({320, 322, 323, 338})  # palette, tiles, extra (alpha) samples
_TIFF_STRIPS = (273, 279)  # StripOffsets, StripByteCounts


@dataclass(frozen=True)
class Header:
    """What an image file declares before any pixel is decoded."""

    format: str  # "JPEG", "PNG" or "TIFF"
    height: int
    width: int
    #: TIFF only: where its pixels start when they are one run of 8-bit RGB samples in file
    #: order (uncompressed, chunky, no orientation or predictor), so no decoder is needed
    raw_offset: int | None = None

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
    loop; raises :class:`HeaderError` saying what is wrong.
    """
    path = Path(path)
    with file_bytes(path) as buf:
        return header_of(path, buf)


def header_of(path: Path, buf: bytes | mmap.mmap) -> Header | None:
    """:func:`read_header` of the file's bytes ``buf`` (``path`` names it in errors)."""
    if len(buf) < 8:
        if buf[:2] == b"\xff\xd8":
            raise HeaderError(path, "JPEG without a readable frame header")
        return None
    head = buf[:8]
    if head == _PNG_SIGNATURE:
        return _png_header(path, buf)
    if head[:2] == b"\xff\xd8":
        return _jpeg_header(path, buf)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_header(path, buf)
    return None


# files up to this size are read into memory; larger ones (no release has any) are mapped
_READ_WHOLE = 64 * 2**20
Buffer = bytes | mmap.mmap  # a file's bytes: read whole, or mapped when large


@contextmanager
def file_bytes(path: str | Path) -> Iterator[Buffer]:
    """The whole file, read once: every check and the decode see the same bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size > _READ_WHOLE:
            with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as buf:
                yield buf
            return
        parts, got = [], 0
        while got < size:  # a read may return less than asked (and the file may shrink)
            part = os.read(fd, size - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        yield parts[0] if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)


def _checked(path: Path, fmt: str, height: int, width: int) -> Header:
    if height <= 0 or width <= 0:
        raise HeaderError(path, f"{fmt} declares a size of {height}x{width} pixels")
    return Header(fmt, height, width)


def _png_header(path: Path, buf: bytes | mmap.mmap) -> Header:
    if len(buf) < 33 or buf[8:16] != b"\x00\x00\x00\x0dIHDR":
        raise HeaderError(path, "PNG without an IHDR chunk first")
    width, height = struct.unpack_from(">II", buf, 16)
    return _checked(path, "PNG", height, width)


class _CutShort(HeaderError):
    """The file ends inside the JPEG's marker segments, before its first scan."""


def _jpeg_walk(path: Path, buf: bytes | mmap.mmap) -> tuple[Header, int]:
    """The frame size (SOF) and the offset where the first scan's data starts.

    Walks the marker segments from SOI by their declared lengths, as a decoder does: an
    EXIF thumbnail inside APP1 (a whole JPEG with its own markers) is skipped, not read. A
    length below 2 (which would step backwards), bytes between segments, or no frame header
    before the first scan is a :class:`HeaderError`; the file ending first, :class:`_CutShort`.
    """
    pos, size, header = 2, len(buf), None
    for _ in range(_JPEG_MAX_SEGMENTS):
        if pos + 1 < size and buf[pos] == 0xFF and buf[pos + 1] == 0xFF:
            fill = _FILL.match(buf, pos)
            assert fill is not None  # buf[pos] is 0xFF: the pattern matches there
            pos = fill.end() - 1
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
        if code == _SOS and header is not None:  # an SOS before any frame header broke above
            return header, pos
    else:
        raise HeaderError(path, f"JPEG with more than {_JPEG_MAX_SEGMENTS} segments before "
                                "its first scan")
    raise HeaderError(path, "JPEG without a readable frame header")


def _jpeg_header(path: Path, buf: bytes | mmap.mmap) -> Header:
    return _jpeg_walk(path, buf)[0]


def _tiff_header(path: Path, buf: bytes | mmap.mmap) -> Header:
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
    others: dict[int, tuple[int, int, bytes]] = {}  # tags read only for the raw pixel path
    entries = _unpacker(order, 1, "HHI4s").iter_unpack(buf[ifd + 2:ifd + 2 + 12 * count])
    for tag, kind, n, value in entries:
        name = _TIFF_TAGS.get(tag)
        if name is None:
            others[tag] = (kind, n, value)
            continue
        code = _TIFF_INT.get(kind)
        if code is None or n == 0:
            raise HeaderError(path, f"TIFF tag {tag} has type {kind} and {n} values, "
                                    "not an integer")
        n_read = min(n, _TIFF_MAX_SAMPLES + 1)  # enough to tell that there are too many
        if n * _TIFF_WIDTH[code] <= 4:
            found[name] = list(_unpacker(order, n_read, code).unpack_from(value))
            continue
        (offset,) = _unpacker(order, 1, "I").unpack(value)
        if offset + n * _TIFF_WIDTH[code] > size:
            raise HeaderError(path, f"TIFF tag {tag} points past the end of the file")
        found[name] = list(_unpacker(order, n_read, code).unpack_from(buf, offset))
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
        if samples == 3 and bits == [8, 8, 8]:
            return Header("TIFF", header.height, header.width,
                          _tiff_raw_offset(buf, order, others, need))
    return header


def _tiff_raw_offset(buf: bytes | mmap.mmap, order: str,
                     tags: dict[int, tuple[int, int, bytes]], need: int) -> int | None:
    """Where the pixels of an uncompressed 8-bit RGB TIFF start, if they are ``need`` bytes
    in one run of strips, in file order, with nothing for a decoder to undo; else ``None``.
    Lenient: a tag this path does not understand only sends the file to OpenCV."""
    if _TIFF_NOT_RAW & tags.keys():
        return None
    for tag, allowed in _TIFF_RAW_TAGS.items():  # one value, or one per sample (339)
        if tag in tags and set(_tiff_values(buf, order, *tags[tag], limit=4) or ()) != {allowed}:
            return None
    if any(tag not in tags for tag in _TIFF_STRIPS):
        return None
    offsets, counts = (_tiff_values(buf, order, *tags[tag]) for tag in _TIFF_STRIPS)
    if not offsets or not counts or len(offsets) != len(counts):
        return None
    end = offsets[0]
    for offset, count in zip(offsets, counts, strict=True):
        if offset != end:
            return None
        end += count
    if end - offsets[0] != need or end > len(buf):
        return None
    return offsets[0]


_TIFF_MAX_STRIPS = 65536  # more strips than this: left to OpenCV (one per row at 65536 rows)


def _tiff_values(buf: bytes | mmap.mmap, order: str, kind: int, n: int, value: bytes,
                 limit: int | None = None) -> list[int] | None:
    """The integer values of one TIFF directory entry (at most ``limit``), or ``None`` when
    they are not integers, too many, or lie outside the file."""
    code = _TIFF_INT.get(kind)
    if code is None or n == 0:
        return None
    n_read = n if limit is None else min(n, limit)
    if n_read > _TIFF_MAX_STRIPS:
        return None
    if n * _TIFF_WIDTH[code] <= 4:
        return list(_unpacker(order, n_read, code).unpack_from(value))
    (offset,) = _unpacker(order, 1, "I").unpack(value)
    if offset + n * _TIFF_WIDTH[code] > len(buf):
        return None
    return list(_unpacker(order, n_read, code).unpack_from(buf, offset))


@functools.lru_cache(maxsize=1024)
def _unpacker(order: str, n: int, code: str) -> struct.Struct:
    """A compiled ``struct`` format of ``n`` values (a TIFF header is parsed per file)."""
    return struct.Struct(f"{order}{n}{code}" if n > 1 else order + code)


def jpeg_complete_bytes(path: Path, buf: Buffer) -> bool:
    """Whether the JPEG ``buf`` reaches its end-of-image marker.

    A JPEG whose download was cut short lacks it; OpenCV would decode it anyway, filling
    the missing rows with grey, so this is checked before decoding. The marker is looked for
    after the start of the first scan (found by :func:`_jpeg_walk`, so an EXIF thumbnail's
    own end marker does not count); in entropy-coded data every 0xFF byte is followed by 0x00
    or a restart code, so the first 0xFF 0xD9 there is the end. Bytes after it (camera and
    editor trailers, of any length) are legal and ignored by decoders. A file that ends
    before its first scan is not complete; one whose segments are malformed raises
    :class:`HeaderError`. Most files end with the marker, which answers without a search.
    """
    if len(buf) < 4:
        return False
    try:
        _, data = _jpeg_walk(path, buf)
    except _CutShort:
        return False
    if len(buf) - 2 >= data and buf[-2:] == b"\xff\xd9":
        return True
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
        return format_of(fh.read(8))


def format_of(head: bytes | mmap.mmap) -> str | None:
    """:func:`image_format` of a file's bytes."""
    return next((name for magic, name in _MAGIC if head[:len(magic)] == magic), None)


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
        with file_bytes(path) as buf, CodecMessages() as codec:
            header = header_of(path, buf)
            if header is None:
                raise ImageError(f"{path}: not a JPEG, PNG or TIFF image")
            limits.active().check("max_image_pixels", header.pixels, path)
            img, bgr, warnings = decode(path, buf, header, min_side, codec)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    log_warnings(path, warnings)
    return to_chw(img, bgr)


def decode(path: Path, buf: bytes | mmap.mmap, header: Header, min_side: int | None,
           codec: CodecMessages) -> tuple[np.ndarray, bool, list[str]]:
    """Decode the image file ``buf`` (its ``header`` already checked against the limits) to
    (H, W, 3) uint8: (image, whether its channels are BGR, the codec's warnings).

    With ``min_side``, a JPEG is decoded at the coarsest 1/2^k scale whose shorter side is
    still >= ``min_side``. Damaged data the codec reported raises :class:`CorruptImageError`;
    its other messages come back for the caller to log once the capture is over.
    """
    if header.raw_offset is not None:
        view = np.frombuffer(buf, np.uint8, header.pixels * 3, header.raw_offset)
        try:
            raw = view.reshape(header.height, header.width, 3)
            # bytes stay alive with the array; a mapped file is closed after: copy from it
            return (raw if isinstance(buf, bytes) else raw.copy()), False, []
        finally:
            del view  # a mapped file can only be closed once no array views it
    flag = cv2.IMREAD_COLOR
    if min_side and header.format == "JPEG":
        for factor in (8, 4, 2):
            if min(header.height, header.width) // factor >= min_side:
                flag = _REDUCED[factor]
                break
    data = np.frombuffer(buf, np.uint8)
    try:
        with bad_bytes_reject(path, "image decoding", ImageError):
            img = cv2.imdecode(data, flag)
    finally:
        del data
    messages = codec.take()
    if img is None:
        raise ImageError(f"{path}: not a readable image")
    corrupt = [m for m in messages if _CORRUPT.search(m)]
    if corrupt:
        raise CorruptImageError(path, "; ".join(corrupt))
    return img, True, messages


def log_warnings(path: str | Path, warnings: list[str]) -> None:
    """Log the codec's warnings about ``path`` (e.g. a libpng or libtiff warning), once each,
    with the file's name: after :class:`CodecMessages` has given standard error back."""
    for message in warnings:
        log.warning("%s: decoder warning: %s", path, message)


def to_chw(img: np.ndarray, bgr: bool = True) -> np.ndarray:
    """(H, W, 3) (BGR if ``bgr``) -> a contiguous (3, H, W) RGB array: the one copy."""
    return np.ascontiguousarray((img[:, :, ::-1] if bgr else img).transpose(2, 0, 1))


def resize_hwc(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an (H, W, C) uint8 image; area interpolation when shrinking, linear otherwise."""
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img
    interp = cv2.INTER_AREA if h >= height and w >= width else cv2.INTER_LINEAR
    return cv2.resize(img, (width, height), interpolation=interp)


class CodecMessages:
    """Standard error pointed at a temporary file while a batch of files is decoded.

    libjpeg, libpng and libtiff report damaged data only as text on file descriptor 2, with
    no file name and no flag in OpenCV's result; so, for the ``with`` block, descriptor 2
    writes to a temporary file (one per process; a lock keeps threads of one process apart),
    and :meth:`take` after each decode returns the lines written since the previous call,
    for the caller to reject the file or to log them with its name once the block is over.
    Redirecting costs a few system calls; doing it once per batch, not per file, is what
    keeps it off PCam's 96 x 96 patches (a size check per file is one ``fstat``).
    """

    def __enter__(self) -> CodecMessages:
        global _sink
        _capture_lock.acquire()
        try:
            if _sink is None or _sink[0] != os.getpid():  # a forked worker needs its own file
                _sink = (os.getpid(), tempfile.TemporaryFile())
            self._fd = _sink[1].fileno()
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)  # the offset descriptor 2 will share
            self._pos = 0
            sys.stderr.flush()
            try:
                self._saved: int | None = os.dup(2)
            except OSError:  # no descriptor 2 (a daemon): nothing would be printed anyway
                self._saved = None
            if self._saved is not None:
                os.dup2(self._fd, 2)
        except BaseException:
            _capture_lock.release()
            raise
        return self

    def take(self) -> list[str]:
        """The non-empty lines written to standard error since the last call."""
        if self._saved is None:
            return []
        end = os.fstat(self._fd).st_size
        if end <= self._pos:
            return []
        text = os.pread(self._fd, end - self._pos, self._pos).decode("utf-8", "replace")
        self._pos = end
        return [line.strip() for line in text.splitlines() if line.strip()]

    def __exit__(self, *exc: object) -> None:
        try:
            if self._saved is not None:
                sys.stderr.flush()
                os.dup2(self._saved, 2)
                os.close(self._saved)
        finally:
            _capture_lock.release()
