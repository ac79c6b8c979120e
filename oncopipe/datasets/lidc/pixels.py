"""CT pixels at the speed of the disk: raw reads at the offsets the header pass found.

A full ``dcmread`` + ``pixel_array`` + float conversion per slice cost 12x the floor (the file
bytes + ``np.frombuffer``). Here a series whose files are all plain (see :mod:`.layout`) is
read into one preallocated (z, y, x) array with one ``readv`` per file (the header bytes into
a scratch buffer, the pixel words straight into the slice), no DICOM parsing. A crop needs
only a band of rows of each slice, contiguous in the file: then only the band is read.

The pixels stay as stored (int16 or uint16: 400 MB for a whole 764-slice series, where float32
HU took 800 MB plus a SimpleITK copy of it), and prepare reads only the slices around each
lesion (``read_series(header, ks, reuse=...)``); :meth:`StoredVolume.hu` converts only the
voxels a crop needs, with one vectorised rescale and padding mask over the region. It computes what
:func:`~oncopipe.datasets.lidc.series.read_slice_hu` computes, bit for bit: float32 sums
when the slope is 1 and the intercept an integer (LIDC; exact, so the same bits as pydicom's
float64), pydicom's float64 arithmetic otherwise.

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

from oncopipe.core.errors import InputError
from oncopipe.datasets.lidc.layout import PixelLayout, header_hash
from oncopipe.datasets.lidc.series import AIR_HU, SeriesError, SeriesHeader, read_slice_hu


class StaleSliceError(InputError):
    """A file changed since the header pass that the lesion table was built from."""


@dataclass
class StoredVolume:
    """Some or all slices of a series as stored, with every slice's rescale and padding range.

    ``stored`` holds the slices read, in z order: int16/uint16 (plain files) or float32 HU
    (decoded by the pydicom path; then slope 1, intercept 0, no padding). ``index`` maps a
    slice number of the series to its row in ``stored`` (-1: not read). The per-slice arrays
    cover the whole series; ``pad_lo > pad_hi`` means no padding value.
    """

    stored: np.ndarray  # (slices read, y, x)
    index: np.ndarray  # (series slices,) int64
    slope: np.ndarray  # (series slices,) float64, as the header says
    intercept: np.ndarray  # (series slices,) float64
    pad_lo: np.ndarray  # (series slices,) int64
    pad_hi: np.ndarray  # (series slices,) int64
    rows: slice  # the rows of each slice that ``stored`` holds, slice(y0, y1)
    height: int  # rows of a whole slice

    @classmethod
    def from_hu(cls, hu: np.ndarray) -> StoredVolume:
        n, height = len(hu), hu.shape[1]
        return cls(np.asarray(hu, np.float32), np.arange(n), np.ones(n), np.zeros(n),
                   np.ones(n, np.int64), np.zeros(n, np.int64), slice(0, height), height)

    def _stored_rows(self, ys: slice) -> slice:
        """Rows ``ys`` of a whole slice as rows of ``stored`` (IndexError: not read)."""
        start, stop, step = ys.indices(self.height)
        if start >= stop:
            return slice(0, 0)
        if step != 1 or start < self.rows.start or stop > self.rows.stop:
            raise IndexError(f"rows {start}:{stop}:{step} of the slices were not read (read "
                             f"{self.rows.start}:{self.rows.stop})")
        return slice(start - self.rows.start, stop - self.rows.start)

    def hu(self, ks: int | slice | np.ndarray, ys: slice = slice(None),
           xs: slice = slice(None)) -> np.ndarray:
        """HU (float32) of slices ``ks`` of the series, ``[ys, xs]``: slope, intercept, padding
        set to air, exactly as ``read_slice_hu`` computes them."""
        if isinstance(ks, slice):
            ks = np.arange(len(self.index))[ks]
        rows = self.index[ks]
        if np.any(rows < 0):
            raise IndexError(f"slice(s) {np.setdiff1d(ks, np.flatnonzero(self.index >= 0))} "
                             "of the series were not read")
        raw = self.stored[rows, self._stored_rows(ys), xs]
        if self.stored.dtype == np.float32:
            return raw.copy()
        per_slice = [a[ks] for a in (self.slope, self.intercept, self.pad_lo, self.pad_hi)]
        if raw.ndim == 3:  # one value per slice, broadcast over (y, x)
            per_slice = [a[:, None, None] for a in per_slice]
        slope, intercept, lo, hi = per_slice
        if (np.all(slope == 1) and np.all(intercept == np.round(intercept))
                and np.all(np.abs(intercept) < 2 ** 23)):
            # 16-bit values plus such an intercept stay below 2**24, so float32 adds them
            # exactly: the bits of pydicom's float64 sum.
            # Skipping x + 0 changes no bit (stored integers are never -0.0).
            hu = raw.astype(np.float32)
            if np.any(intercept != 0):
                hu += intercept.astype(np.float32)
        else:  # as pydicom's apply_modality_lut: float64 x * slope + intercept, then float32
            hu = raw.astype(np.float64)
            hu *= slope
            hu += intercept
            hu = hu.astype(np.float32)
        if np.all(lo == hi):
            mask = raw == lo
        elif np.any(lo <= hi):
            mask = (raw >= lo) & (raw <= hi)
        else:
            return hu
        np.copyto(hu, AIR_HU, where=mask)
        return hu


def read_series(header: SeriesHeader, ks: np.ndarray | list[int] | None = None,
                reuse: StoredVolume | None = None, rows: slice = slice(None)) -> StoredVolume:
    """Rows ``rows`` of slices ``ks`` of ``header`` (all when None), by raw reads when every
    file is plain.

    A crop needs a band of rows of each slice, and a band is contiguous in the file: only its
    bytes are read (after the header bytes, which are checked). Slices already in ``reuse``
    (the previous lesion's volume, say) are copied, not read, when its band covers this one.
    """
    layouts = [s.layout for s in header.slices if s.layout is not None]
    if len(layouts) != len(header.slices):
        raise SeriesError(f"{header.folder}: series header has no pixel layouts")
    ks = np.arange(len(layouts)) if ks is None else np.unique(np.asarray(ks, np.int64))
    index = np.full(len(layouts), -1, np.int64)
    index[ks] = np.arange(len(ks))
    height, width = header.shape_yx
    y0, y1, _ = rows.indices(height)
    band = slice(y0, max(y0, y1))
    dtypes = {lay.dtype for lay in layouts}
    if len(dtypes) != 1 or "" in dtypes:
        return _read_decoded(header, layouts, ks, index, reuse, band)
    stored = np.empty((len(ks), band.stop - band.start, width), dtypes.pop())
    source = _reusable(reuse, stored.dtype, band)
    nbytes = stored[0].nbytes if len(ks) else 0
    skip = band.start * width * stored.itemsize  # bytes of the rows above the band
    view = memoryview(bytearray(max(lay.header_bytes for lay in layouts)))
    for row, k in enumerate(ks):
        part = _copied(source, k, band)
        if part is not None:
            stored[row] = part
            continue
        sl, lay = header.slices[k], layouts[k]
        fd = _open(sl.path)
        try:
            size = os.fstat(fd).st_size
            if skip:
                got = os.preadv(fd, [view[:lay.header_bytes]], 0) + os.preadv(
                    fd, [stored[row]], lay.header_bytes + skip)
            else:
                got = os.readv(fd, [view[:lay.header_bytes], stored[row]])
        finally:
            os.close(fd)
        if size != lay.size or header_hash(view[:lay.header_bytes]) != lay.header_hash:
            raise StaleSliceError(f"{sl.path}: changed since the header pass (size or header "
                                  "differs); rerun the lidc_lesions stage")
        if got != lay.header_bytes + nbytes:
            raise SeriesError(f"{sl.path}: pixel data truncated ({got} of "
                              f"{lay.header_bytes + nbytes} bytes)")
        if lay.bits_stored < 16:  # as pydicom: unused high bits ignored (masked/sign-extended)
            np.left_shift(stored[row], 16 - lay.bits_stored, out=stored[row])
            np.right_shift(stored[row], 16 - lay.bits_stored, out=stored[row])
    slope = np.array([lay.slope for lay in layouts], np.float64)
    intercept = np.array([lay.intercept for lay in layouts], np.float64)
    none = [(1, 0) if lay.pad_lo is None else (lay.pad_lo, lay.pad_hi) for lay in layouts]
    pad_lo, pad_hi = (np.array(v, np.int64) for v in zip(*none, strict=True))
    return StoredVolume(stored, index, slope, intercept, pad_lo, pad_hi, band, height)


def _reusable(reuse: StoredVolume | None, dtype: np.dtype, band: slice) -> StoredVolume | None:
    """``reuse`` when its slices can be copied into a volume of ``dtype`` holding ``band``."""
    if (reuse is None or reuse.stored.dtype != dtype or band.start < reuse.rows.start
            or band.stop > reuse.rows.stop):
        return None
    return reuse


def _copied(source: StoredVolume | None, k: int, band: slice) -> np.ndarray | None:
    """Rows ``band`` of slice ``k`` from ``source`` (None when it does not hold the slice)."""
    if source is None or source.index[k] < 0:
        return None
    start = band.start - source.rows.start
    return source.stored[int(source.index[k]), start:start + band.stop - band.start]


def _read_decoded(header: SeriesHeader, layouts: list[PixelLayout], ks: np.ndarray,
                  index: np.ndarray, reuse: StoredVolume | None, band: slice) -> StoredVolume:
    """The pydicom path (compressed or unusual files): each slice decoded to float32 HU."""
    height, width = header.shape_yx
    vol = np.empty((len(ks), band.stop - band.start, width), np.float32)
    source = _reusable(reuse, vol.dtype, band)
    for row, k in enumerate(ks):
        part = _copied(source, k, band)
        if part is not None:
            vol[row] = part
            continue
        sl, lay = header.slices[k], layouts[k]
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
        vol[row] = img[band]
    n = len(header.slices)
    return StoredVolume(vol, index, np.ones(n), np.zeros(n), np.ones(n, np.int64),
                        np.zeros(n, np.int64), band, height)


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise StaleSliceError(f"{path}: gone since the header pass; rerun the lidc_lesions "
                              "stage") from None
