"""Decoding 2D image files (TIF, JPEG, PNG) into channel-first uint8 arrays, fast.

OpenCV decodes all three formats; for JPEG it can decode at 1/2, 1/4 or 1/8 scale directly
from the DCT coefficients (``IMREAD_REDUCED_*``), 3-4x faster than a full decode followed by
a resize, which matters for the multi-thousand-pixel ISIC photographs. :func:`read_rgb`
picks the largest reduction that still leaves the image at least ``min_side`` pixels on its
shorter side, so the final resize only ever shrinks.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from oncopipe.errors import RejectError

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


def header_size(path: str | Path) -> tuple[int, int] | None:
    """(height, width) of a PNG or JPEG from its header alone, without decoding pixels;
    ``None`` for any other format.

    JPEG: walks the marker segments with seeks, so camera files whose EXIF or ICC blocks run
    to hundreds of KiB are still read in a few small reads. PNG: the IHDR chunk. Raises
    :class:`ImageError` for a JPEG without a frame header.
    """
    with open(path, "rb") as fh:
        head = fh.read(24)
        if head[:8] == b"\x89PNG\r\n\x1a\n":
            return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
        if head[:2] != b"\xff\xd8":
            return None
        fh.seek(2)
        while True:
            marker = fh.read(4)
            if len(marker) < 4 or marker[0] != 0xFF:
                raise ImageError(f"{path}: JPEG without a readable frame header")
            if marker[1] in _SOF_MARKERS:
                frame = fh.read(5)
                return int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")
            fh.seek(int.from_bytes(marker[2:4], "big") - 2, 1)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width): :func:`header_size` for PNG and JPEG, anything else is decoded."""
    size = header_size(path)
    if size is not None:
        return size
    img = read_rgb(path)
    return img.shape[1], img.shape[2]


_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"II*\x00", "TIFF"),
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

    With ``min_side``, JPEGs are decoded at the coarsest 1/2^k scale whose shorter side is
    still >= ``min_side`` (no effect on other formats). Raises :class:`ImageError`.
    """
    path = Path(path)
    flag = cv2.IMREAD_COLOR
    if min_side and path.suffix.lower() in (".jpg", ".jpeg"):
        try:
            h, w = image_size(path)
        except OSError as exc:
            raise ImageError(f"{path}: cannot read ({exc})") from None
        for factor in (8, 4, 2):
            if min(h, w) // factor >= min_side:
                flag = _REDUCED[factor]
                break
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
