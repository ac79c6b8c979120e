"""Lesion-centred crops in HU, resampled with SimpleITK at a fixed physical size.

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
in z): the whole volume never exists in float32 or as a SimpleITK image. The region gets the
geometry (origin, spacing) it would have had as a part of the whole-volume image, so crops
are the same bit for bit as when the whole volume was converted first.
"""

from __future__ import annotations

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


def _resample(image: sitk.Image, centre: tuple[float, ...], spacing: float,
              size: int) -> np.ndarray:
    dim = image.GetDimension()
    origin = [c - (size - 1) / 2 * spacing for c in centre]
    out = sitk.Resample(image, [size] * dim, sitk.Transform(), sitk.sitkLinear, origin,
                        [spacing] * dim, np.eye(dim).ravel().tolist(), AIR_HU,
                        sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def crop_2d(slice_hu: np.ndarray, header: SeriesHeader, x_mm: float, y_mm: float,
            p: CropParams) -> np.ndarray:
    """(size_2d, size_2d) HU, rows along y, centred on (x_mm, y_mm)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(slice_hu, np.float32))
    image.SetSpacing(header.spacing_xy)
    image.SetOrigin(header.origin_xy)
    return _resample(image, (x_mm, y_mm), p.mm_per_px, p.size_2d)


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
        if self.upper is None:
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
    grid = ZGrid.of(header)
    whole = sitk.Image([1, 1, 1], sitk.sitkFloat32)
    whole.SetSpacing((*header.spacing_xy, grid.step))
    whole.SetOrigin((*header.origin_xy, grid.z0))
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


def region_image(volume: StoredVolume, header: SeriesHeader, centre_mm: tuple[float, ...],
                 half_mm: float) -> sitk.Image | None:
    """HU within ``half_mm`` of ``centre_mm`` (plus a margin for interpolation), or None.

    A part of the series on its regular z grid (:class:`ZGrid`), with the origin and spacing
    SimpleITK gives that part of the whole-grid image (``RegionOfInterest``'s geometry).
    """
    region = _region(header, centre_mm, half_mm)
    if region is None:
        return None
    (x0, y0, z0), (x1, y1, z1) = region.start, region.stop
    hu = region.grid.hu(volume, slice(z0, z1), slice(y0, y1), slice(x0, x1))
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(region.whole.GetSpacing())
    image.SetOrigin(region.whole.TransformIndexToPhysicalPoint(region.start.tolist()))
    return image


def crop_3d(volume: StoredVolume, header: SeriesHeader, centre_mm: tuple[float, float, float],
            p: CropParams) -> np.ndarray:
    """(size_3d,) * 3 HU, axes (z, y, x), centred on ``centre_mm``."""
    spacing = p.fov_3d_mm / p.size_3d
    region = region_image(volume, header, centre_mm, _half_3d(p))
    if region is None:  # entirely outside the scan
        return np.full((p.size_3d,) * 3, AIR_HU, np.float32)
    variances = [max(0.0, (spacing / 2) ** 2 - (s / 2) ** 2) for s in region.GetSpacing()]
    if max(variances) > 0.01:  # mm^2
        region = sitk.DiscreteGaussian(region, variances, 32, 0.01, True)
    return _resample(region, centre_mm, spacing, p.size_3d)
