"""Append-only ``.npy`` writer for prepared samples, with memory bounded by one sample.

The number of kept samples is unknown until the raw data has been read (rejects), so the
``.npy`` header is written last: a fixed 256-byte header region is reserved, samples are
appended as they arrive, and on close the real header (with the final shape) is written into
that region. ``np.load(..., mmap_mode="r")`` reads the result like any ``.npy``. The file is
written beside its final name and renamed on success (see :mod:`oncopipe.core.atomic`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

from oncopipe.core.atomic import atomic_path

_HEADER_BYTES = 256
_MAGIC = b"\x93NUMPY\x01\x00"


class ArrayWriter:
    """Write ``(N, *sample_shape)`` arrays of ``dtype`` one sample at a time."""

    def __init__(self, path: str | Path, sample_shape: tuple[int, ...], dtype: npt.DTypeLike):
        self.path = Path(path)
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.dtype = np.dtype(dtype)
        self.count = 0
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_path(self.path))
        self._fh = self._stack.enter_context(open(self._tmp, "wb"))  # noqa: SIM115
        self._fh.write(b"\0" * _HEADER_BYTES)

    def append(self, sample: np.ndarray) -> int:
        """Append one sample; returns its row index."""
        if sample.shape != self.sample_shape:
            raise ValueError(f"{self.path}: sample shape {sample.shape} != {self.sample_shape}")
        self._fh.write(np.ascontiguousarray(sample, dtype=self.dtype).tobytes())
        self.count += 1
        return self.count - 1

    def close(self) -> None:
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.count, *self.sample_shape),
        }
        text = repr(header).encode("latin1")
        room = _HEADER_BYTES - len(_MAGIC) - 2
        if len(text) + 1 > room:
            raise ValueError(f"{self.path}: header too long")
        text = text + b" " * (room - len(text) - 1) + b"\n"
        self._fh.seek(0)
        self._fh.write(_MAGIC + len(text).to_bytes(2, "little") + text)
        self._stack.close()  # closes the file, then renames it onto self.path

    def __enter__(self) -> ArrayWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._stack.__exit__(exc_type, exc, tb)
