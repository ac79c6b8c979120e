"""Lesion-centred crops in HU, resampled at a fixed physical size.

Crops are defined in patient millimetres, not voxels, so every crop has the same geometry
whatever the scanner's pixel spacing and slice step (0.46-0.98 mm and 0.6-5 mm in LIDC). The
crop's centre (between its two middle pixels for even sizes) is the lesion centroid. Samples
outside the scan are air (-1000 HU): a lesion near the volume border is padded, never dropped.

- 2D: axial ``size_2d`` x ``size_2d`` at ``mm_per_px`` on one slice (in-plane resampling only,
  so the annotated slice is used as acquired).
- 3D: a cube of ``fov_3d_mm`` on ``size_3d`` voxels; a series with an uneven slice step is
  first interpolated onto a regular z grid. When the output is coarser than the input, the
  volume is smoothed first (Gaussian, to an effective sigma of half the output spacing) so
  it does not alias.

Only the region around each lesion is converted from stored values to HU (and interpolated
in z): the whole volume never exists in float32. The region gets the geometry (origin,
spacing) it would have had as a part of the whole-volume image, so crops are the same as when
the whole volume was converted first.

The arithmetic is SimpleITK's (``Resample`` with a linear interpolator, ``DiscreteGaussian``
with its kernel and zero-flux boundaries), done with numpy on the few voxels a crop reads:
separable linear interpolation (along x, then y, then z, as ITK's interpolator lerps) and a
separable Gaussian (ITK's kernel and pass order) on the crop's region. SimpleITK's filters
cost more than the pixel reads they follow (image copies, a thread pool per call); the
outputs are SimpleITK's, to float rounding (docs/benchmarks.md states the measured
difference).
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from oncopipe.datasets.lidc.params import CropParams
from oncopipe.datasets.lidc.pixels import StoredVolume
from oncopipe.datasets.lidc.series import AIR_HU, SeriesHeader


def window(hu: np.ndarray, hu_window: tuple[float, float]) -> np.ndarray:
    """HU -> [0, 1] float16: clip to the window, then scale linearly."""
    lo, hi = hu_window
    return ((np.clip(hu, lo, hi) - lo) / (hi - lo)).astype(np.float16)


def _axis(n: int, origin: float, spacing: float, centre: float, out_spacing: float,
          size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation along one axis of ``n`` samples at ``origin + spacing * i``, onto
    ``size`` samples centred on ``centre``: (lower, upper, fraction, inside) per output sample.

    As ITK: a sample is inside when its continuous index lies in [-0.5, n - 0.5); the index is
    clamped to [0, n - 1], so the half voxel beyond either end takes the end value.
    """
    out_origin = centre - (size - 1) / 2 * out_spacing
    idx = (out_origin + out_spacing * np.arange(size) - origin) / spacing
    inside = (idx >= -0.5) & (idx < n - 0.5)
    clamped = np.clip(idx, 0.0, n - 1)
    lo = np.floor(clamped).astype(np.int64)
    return lo, np.minimum(lo + 1, n - 1), clamped - lo, inside


def _lerp(a: np.ndarray, axis: int, lo: np.ndarray, hi: np.ndarray,
          frac: np.ndarray) -> np.ndarray:
    """``a`` sampled at ``lo + frac`` along ``axis`` (float64): v_lo + (v_hi - v_lo) * frac."""
    shape = [1] * a.ndim
    shape[axis] = len(frac)
    low = np.take(a, lo, axis=axis)
    return low + (np.take(a, hi, axis=axis) - low) * frac.reshape(shape)


def _sample(region: np.ndarray, axes: list[tuple[np.ndarray, np.ndarray, np.ndarray,
                                                 np.ndarray]]) -> np.ndarray:
    """Linear samples of ``region`` (axes in array order, each from :func:`_axis` relative to
    the region), interpolated along the last array axis first; outside samples are air."""
    out = region.astype(np.float64)
    for axis in reversed(range(region.ndim)):
        lo, hi, frac, _ = axes[axis]
        out = _lerp(out, axis, lo, hi, frac)
    inside = np.ones(out.shape, bool)
    for axis, (_, _, _, within) in enumerate(axes):
        shape = [1] * out.ndim
        shape[axis] = len(within)
        inside &= within.reshape(shape)
    out[~inside] = AIR_HU
    return out.astype(np.float32)


def _needed(axes: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
            ) -> list[slice] | None:
    """The input range each axis' inside samples read (None when none is inside), and the
    axes made relative to it."""
    ranges = []
    for i, (lo, hi, frac, inside) in enumerate(axes):
        if not inside.any():
            return None
        start, stop = int(lo[inside].min()), int(hi[inside].max()) + 1
        ranges.append(slice(start, stop))
        axes[i] = (np.clip(lo - start, 0, stop - start - 1),
                   np.clip(hi - start, 0, stop - start - 1), frac, inside)
    return ranges


def crop_2d(slice_hu: np.ndarray | Callable[[slice, slice], np.ndarray],
            header: SeriesHeader, x_mm: float, y_mm: float, p: CropParams) -> np.ndarray:
    """(size_2d, size_2d) HU, rows along y, centred on (x_mm, y_mm).

    ``slice_hu``: the slice's HU, or a function giving HU of ``[rows, columns]`` of it (only
    the pixels the crop reads are converted: ``lambda ys, xs: volume.hu(k, ys, xs)``).
    """
    (rows, cols), (sx, sy), (ox, oy) = header.shape_yx, header.spacing_xy, header.origin_xy
    axes = [_axis(rows, oy, sy, y_mm, p.mm_per_px, p.size_2d),
            _axis(cols, ox, sx, x_mm, p.mm_per_px, p.size_2d)]
    ranges = _needed(axes)
    if ranges is None:
        return np.full((p.size_2d, p.size_2d), AIR_HU, np.float32)
    region = slice_hu[ranges[0], ranges[1]] if isinstance(slice_hu, np.ndarray) else slice_hu(
        *ranges)
    return _sample(region, axes)


@dataclass(frozen=True)
class ZGrid:
    """The regular z grid 3D crops sample: the slices themselves, or an interpolated grid.

    ``upper``/``frac``: grid row g lies between slices ``upper[g] - 1`` and ``upper[g]``, at
    fraction ``frac[g]`` (None when the slice step is regular: grid row g is slice g).
    """

    n: int
    step: float
    z0: float
    upper: np.ndarray | None = None
    frac: np.ndarray | None = None

    @classmethod
    def of(cls, header: SeriesHeader) -> ZGrid:
        zs = header.zs
        step = header.z_step if len(zs) > 1 else 1.0
        if len(zs) > 1 and np.abs(np.diff(zs) - step).max() > 1e-3 * step:
            grid = zs[0] + step * np.arange(round((zs[-1] - zs[0]) / step) + 1)
            upper = np.clip(np.searchsorted(zs, grid), 1, len(zs) - 1)
            frac = ((grid - zs[upper - 1]) / (zs[upper] - zs[upper - 1])).astype(np.float32)
            return cls(len(grid), step, float(zs[0]), upper, frac)
        return cls(len(zs), step, float(zs[0]))

    def hu(self, volume: StoredVolume, zs: slice, ys: slice, xs: slice) -> np.ndarray:
        """HU of grid rows ``zs`` (float32, interpolated linearly between slices if needed)."""
        if self.upper is None or self.frac is None:  # both or neither: see ZGrid.of
            return volume.hu(zs, ys, xs)
        upper, frac = self.upper[zs], self.frac[zs]
        return (volume.hu(upper - 1, ys, xs) * (1 - frac)[:, None, None]
                + volume.hu(upper, ys, xs) * frac[:, None, None])


@dataclass(frozen=True)
class _Region:
    grid: ZGrid
    whole: sitk.Image  # 1 voxel: the whole grid's geometry (index <-> mm)
    start: np.ndarray  # (x, y, z) grid index, inclusive
    stop: np.ndarray  # exclusive


def _region(header: SeriesHeader, centre_mm: tuple[float, ...], half_mm: float
            ) -> _Region | None:
    """The grid box within ``half_mm`` of ``centre_mm`` plus an interpolation margin, or None."""
    grid, whole = _geometry(header)
    size = np.array([header.shape_yx[1], header.shape_yx[0], grid.n])
    lo = np.array(whole.TransformPhysicalPointToContinuousIndex(
        [c - half_mm for c in centre_mm]))
    hi = np.array(whole.TransformPhysicalPointToContinuousIndex(
        [c + half_mm for c in centre_mm]))
    start = np.clip(np.floor(lo).astype(int) - 1, 0, size)
    stop = np.clip(np.ceil(hi).astype(int) + 2, 0, size)
    if np.any(stop - start < 1):
        return None
    return _Region(grid, whole, start, stop)


_last = threading.local()  # per thread (serve crops in several): the last series' geometry


def _geometry(header: SeriesHeader) -> tuple[ZGrid, sitk.Image]:
    """The series' z grid and a 1-voxel image with the whole grid's geometry (SimpleITK's
    index <-> mm arithmetic), built once per series and thread: a series' lesions are cropped
    in turn."""
    cached = getattr(_last, "geometry", None)
    if cached is None or cached[0] is not header:
        grid = ZGrid.of(header)
        whole = sitk.Image([1, 1, 1], sitk.sitkFloat32)
        whole.SetSpacing((*header.spacing_xy, grid.step))
        whole.SetOrigin((*header.origin_xy, grid.z0))
        cached = _last.geometry = (header, grid, whole)
    return cached[1], cached[2]


def _half_3d(p: CropParams) -> float:
    return p.fov_3d_mm / 2 + 2 * (p.fov_3d_mm / p.size_3d)


def slices_3d(header: SeriesHeader, centre_mm: tuple[float, float, float],
              p: CropParams) -> np.ndarray:
    """The slice numbers :func:`crop_3d` reads for a crop centred on ``centre_mm``."""
    region = _region(header, centre_mm, _half_3d(p))
    if region is None:
        return np.zeros(0, np.int64)
    rows = np.arange(region.start[2], region.stop[2])
    if region.grid.upper is None:
        return rows
    return np.union1d(region.grid.upper[rows] - 1, region.grid.upper[rows])


def rows_needed(header: SeriesHeader, centre_mm: tuple[float, float, float],
                p: CropParams) -> slice:
    """The rows of a slice that the 2D crop (:func:`crop_2d`) and the 3D crop
    (:func:`crop_3d`) centred on ``centre_mm`` read: the band ``read_series`` reads."""
    (rows, _), sy, oy = header.shape_yx, header.spacing_xy[1], header.origin_xy[1]
    lo, hi, _, inside = _axis(rows, oy, sy, centre_mm[1], p.mm_per_px, p.size_2d)
    bands = [(int(lo[inside].min()), int(hi[inside].max()) + 1)] if inside.any() else []
    region = _region(header, centre_mm, _half_3d(p))
    if region is not None:
        bands.append((int(region.start[1]), int(region.stop[1])))
    if not bands:
        return slice(0, 0)
    return slice(min(b[0] for b in bands), max(b[1] for b in bands))


def crop_3d(volume: StoredVolume, header: SeriesHeader, centre_mm: tuple[float, float, float],
            p: CropParams) -> np.ndarray:
    """(size_3d,) * 3 HU, axes (z, y, x), centred on ``centre_mm``.

    When the output is coarser than the input, the region is first smoothed with
    SimpleITK's ``DiscreteGaussian`` kernel (:func:`gaussian_kernel`) to an effective sigma of
    half the output spacing, so it does not alias.
    """
    spacing = p.fov_3d_mm / p.size_3d
    region = _region(header, centre_mm, _half_3d(p))
    if region is None:  # entirely outside the scan
        return np.full((p.size_3d,) * 3, AIR_HU, np.float32)
    (x0, y0, z0), (x1, y1, z1) = region.start, region.stop
    hu = region.grid.hu(volume, slice(z0, z1), slice(y0, y1), slice(x0, x1))
    spacings = region.whole.GetSpacing()  # x, y, z
    origin = region.whole.TransformIndexToPhysicalPoint(region.start.tolist())
    variances = [max(0.0, (spacing / 2) ** 2 - (s / 2) ** 2) for s in spacings]
    if max(variances) > 0.01:  # mm^2
        hu = smooth(hu, [v / s ** 2 for v, s in zip(variances, spacings, strict=True)])
    axes = [_axis(hu.shape[2 - i], origin[i], spacings[i], centre_mm[i], spacing, p.size_3d)
            for i in (2, 1, 0)]  # array order: z, y, x
    return _sample(hu, axes)


def smooth(image: np.ndarray, variances_px: list[float]) -> np.ndarray:
    """``sitk.DiscreteGaussian(image, variances, 32, 0.01, True)`` of a float32 (z, y, x)
    array, ``variances_px`` in voxels squared, (x, y, z), bit for bit: separable passes along
    z, then y, then x, each summed in float64 over the kernel taps in order and stored as
    float32, with zero-flux (edge-replicating) boundaries, as ITK's filter does them."""
    out = np.asarray(image, np.float32)
    for axis in range(image.ndim):  # z first: ITK's last dimension
        variance = variances_px[image.ndim - 1 - axis]
        n = out.shape[axis]
        if variance <= 0 or n == 0:  # the kernel is (0, 1, 0): no change
            continue
        kernel = gaussian_kernel(variance)
        r = len(kernel) // 2
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        padded = np.pad(out.astype(np.float64), pad, mode="edge")
        acc = np.empty(out.shape, np.float64)
        term = np.empty(out.shape, np.float64)
        for t, c in enumerate(kernel):  # 0 + the first term is the first term: start there
            window = padded[(slice(None),) * axis + (slice(t, t + n),)]
            np.multiply(window, c, out=term if t else acc)
            if t:
                acc += term
        out = acc.astype(np.float32)
    return out


@functools.cache
def gaussian_kernel(variance: float, max_error: float = 0.01, max_width: int = 32
                    ) -> np.ndarray:
    """ITK's ``GaussianOperator`` coefficients for ``variance`` (voxels squared): the
    discrete Gaussian e^-t I_n(t) with ITK's approximations of the modified Bessel functions,
    extended until the tails hold less than ``max_error``, normalised to sum 1."""
    et = math.exp(-variance)
    coeff = [et * _bessel_i0(variance), et * _bessel_i1(variance)]
    total = coeff[0] + 2 * coeff[1]
    n = 2
    while total < 1.0 - max_error:
        coeff.append(et * _bessel_in(n, variance))
        total += 2 * coeff[n]
        if coeff[n] <= 0.0 or len(coeff) > max_width:
            break
        n += 1
    half = [c / total for c in coeff]
    return np.array(half[:0:-1] + half)


def _bessel_i0(y: float) -> float:
    d = abs(y)
    if d < 3.75:
        m = (y / 3.75) ** 2
        return 1.0 + m * (3.5156229 + m * (3.0899424 + m * (1.2067492 + m * (
            0.2659732 + m * (0.360768e-1 + m * 0.45813e-2)))))
    m = 3.75 / d
    return (math.exp(d) / math.sqrt(d)) * (0.39894228 + m * (0.1328592e-1 + m * (
        0.225319e-2 + m * (-0.157565e-2 + m * (0.916281e-2 + m * (-0.2057706e-1 + m * (
            0.2635537e-1 + m * (-0.1647633e-1 + m * 0.392377e-2))))))))


def _bessel_i1(y: float) -> float:
    d = abs(y)
    if d < 3.75:
        m = (y / 3.75) ** 2
        acc = d * (0.5 + m * (0.87890594 + m * (0.51498869 + m * (0.15084934 + m * (
            0.2658733e-1 + m * (0.301532e-2 + m * 0.32411e-3))))))
    else:
        m = 3.75 / d
        acc = 0.2282967e-1 + m * (-0.2895312e-1 + m * (0.1787654e-1 - m * 0.420059e-2))
        acc = 0.39894228 + m * (-0.3988024e-1 + m * (-0.362018e-2 + m * (0.163801e-2 + m * (
            -0.1031555e-1 + m * acc))))
        acc *= math.exp(d) / math.sqrt(d)
    return -acc if y < 0 else acc


def _bessel_in(n: int, y: float) -> float:
    """I_n(y), n >= 2, by Miller's downward recurrence (ITK's ``ModifiedBesselI``)."""
    if y == 0.0:
        return 0.0
    toy, qip, acc, qi = 2.0 / abs(y), 0.0, 0.0, 1.0
    for j in range(2 * (n + int(math.sqrt(40.0 * n))), 0, -1):
        qim = qip + j * toy * qi
        qip, qi = qi, qim
        if abs(qi) > 1.0e10:
            acc, qi, qip = acc * 1.0e-10, qi * 1.0e-10, qip * 1.0e-10
        if j == n:
            acc = qip
    acc *= _bessel_i0(y) / qi
    return -acc if y < 0.0 and n & 1 else acc
