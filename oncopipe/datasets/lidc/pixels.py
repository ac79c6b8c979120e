"""CT pixels at the speed of the disk: raw reads at the offsets the header pass found.

A full ``dcmread`` + ``pixel_array`` + float conversion per slice cost 12x the floor (the file
bytes + ``np.frombuffer``). Here a series whose files are all plain (see :mod:`.layout`) is
read into one preallocated (z, y, x) array with one ``readv`` per file (the header bytes into
a scratch buffer, the pixel words straight into the slice), no DICOM parsing.

The series stays as stored (int16 or uint16: 400 MB for a 764-slice series, where float32 HU
took 800 MB plus a SimpleITK copy of it); :meth:`StoredVolume.hu` converts only the voxels a
crop needs, with one vectorised rescale and padding mask over the region. It computes what
:func:`~oncopipe.datasets.lidc.series.read_slice_hu` computes, with the same float32
operations, so the HU are the same bit for bit.

A series with any file that is not plain goes through ``read_slice_hu`` (pydicom) slice by
slice. Every file is checked when read against what the header pass saw (size and header
hash), so a lesion table built from other files fails with the file's name instead of
cropping the wrong pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oncopipe.datasets.lidc.layout import header_hash
from oncopipe.datasets.lidc.series import AIR_HU, SeriesError, SeriesHeader, read_slice_hu


class StaleSliceError(RuntimeError):
    """A file changed since the header pass that the lesion table was built from."""


@dataclass
class StoredVolume:
    """A series' pixels as stored, with each slice's rescale and padding range.

    ``stored`` is int16/uint16 (plain files) or float32 HU (decoded by the pydicom path, then
    slope 1, intercept 0 and no padding). ``pad_lo > pad_hi`` means no padding value.
    """

    stored: np.ndarray  # (z, y, x)
    slope: np.ndarray  # (z,) float32
    intercept: np.ndarray  # (z,) float32
    pad_lo: np.ndarray  # (z,) int64
    pad_hi: np.ndarray  # (z,) int64

    @classmethod
    def from_hu(cls, hu: np.ndarray) -> StoredVolume:
        n = len(hu)
        return cls(np.asarray(hu, np.float32), np.ones(n, np.float32), np.zeros(n, np.float32),
                   np.ones(n, np.int64), np.zeros(n, np.int64))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.stored.shape

    def hu(self, ks: int | slice | np.ndarray, ys: slice = slice(None),
           xs: slice = slice(None)) -> np.ndarray:
        """HU (float32) of ``stored[ks, ys, xs]``: slope, intercept, padding set to air."""
        raw = self.stored[ks, ys, xs]
        if self.stored.dtype == np.float32:
            return raw.copy()
        per_slice = [a[ks] for a in (self.slope, self.intercept, self.pad_lo, self.pad_hi)]
        if raw.ndim == 3:  # one value per slice, broadcast over (y, x)
            per_slice = [a[:, None, None] for a in per_slice]
        slope, intercept, lo, hi = per_slice
        hu = raw.astype(np.float32)
        hu *= slope
        hu += intercept
        if np.any(lo <= hi):
            hu[(raw >= lo) & (raw <= hi)] = AIR_HU
        return hu


def read_series(header: SeriesHeader) -> StoredVolume:
    """All kept slices of ``header`` (z increasing), by raw reads when every file is plain."""
    layouts = [s.layout for s in header.slices]
    if any(lay is None for lay in layouts):
        raise SeriesError(f"{header.folder}: series header has no pixel layouts")
    dtypes = {lay.dtype for lay in layouts}
    if len(dtypes) != 1 or "" in dtypes:
        return _read_decoded(header)
    stored = np.empty((len(layouts), *header.shape_yx), dtypes.pop())
    width = stored[0].nbytes
    view = memoryview(bytearray(max(lay.header_bytes for lay in layouts)))
    for k, (sl, lay) in enumerate(zip(header.slices, layouts, strict=True)):
        fd = _open(sl.path)
        try:
            size = os.fstat(fd).st_size
            got = os.readv(fd, [view[:lay.header_bytes], stored[k]])
        finally:
            os.close(fd)
        if size != lay.size or header_hash(view[:lay.header_bytes]) != lay.header_hash:
            raise StaleSliceError(f"{sl.path}: changed since the header pass (size or header "
                                  "differs); rerun the lidc_lesions stage")
        if got != lay.header_bytes + width:
            raise SeriesError(f"{sl.path}: pixel data truncated ({got} of "
                              f"{lay.header_bytes + width} bytes)")
        if lay.bits_stored < 16:  # as pydicom: unused high bits ignored (masked/sign-extended)
            np.left_shift(stored[k], 16 - lay.bits_stored, out=stored[k])
            np.right_shift(stored[k], 16 - lay.bits_stored, out=stored[k])
    slope = np.array([lay.slope for lay in layouts], np.float32)
    intercept = np.array([lay.intercept for lay in layouts], np.float32)
    none = [(1, 0) if lay.pad_lo is None else (lay.pad_lo, lay.pad_hi) for lay in layouts]
    pad_lo, pad_hi = (np.array(v, np.int64) for v in zip(*none, strict=True))
    return StoredVolume(stored, slope, intercept, pad_lo, pad_hi)


def _read_decoded(header: SeriesHeader) -> StoredVolume:
    """The pydicom path (compressed or unusual files): each slice decoded to float32 HU."""
    vol = np.empty((len(header.slices), *header.shape_yx), np.float32)
    for k, sl in enumerate(header.slices):
        lay = sl.layout
        with os.fdopen(_open(sl.path), "rb") as fp:
            size = os.fstat(fp.fileno()).st_size
            digest = header_hash(fp.read(lay.header_bytes))
        if size != lay.size or digest != lay.header_hash:
            raise StaleSliceError(f"{sl.path}: changed since the header pass (size or header "
                                  "differs); rerun the lidc_lesions stage")
        img = read_slice_hu(sl.path)
        if img.shape != header.shape_yx:
            raise SeriesError(f"{sl.path}: pixel data {img.shape} != Rows/Columns "
                              f"{header.shape_yx}")
        vol[k] = img
    return StoredVolume.from_hu(vol)


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise StaleSliceError(f"{path}: gone since the header pass; rerun the lidc_lesions "
                              "stage") from None
