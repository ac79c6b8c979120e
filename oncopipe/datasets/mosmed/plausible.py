"""Is one uploaded volume a chest CT like the release's? Refuse junk, warn about the unusual.

Only ``predict``/``serve`` ask (the ``prepare`` stage keeps every readable study, as the
release holds only CT): a model trained on MosMedData answers anything with a confident
probability, so an all-zero volume, a normalised or rescaled one, a handful of slices or a
thumbnail is refused with one sentence (:class:`~oncopipe.core.errors.NotDatasetInputError`).
A chest CT in HU that differs from the release only in its geometry is answered, with a
warning in the answer (:mod:`oncopipe.ingest.input_warnings`).

What the release holds (COVID19_1110): int16 HU from -1024 (air) upwards, 512 x 512 pixels
of 0.6-0.9 mm (a field of view of about 300-460 mm), slices 8 mm apart. The minimum size is
the release's or the model's input, whichever is smaller, so a model trained on a reduced
demo (fewer, smaller slices) still takes the demo's own studies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oncopipe.core.errors import NotDatasetInputError
from oncopipe.datasets.mosmed.volume import Volume
from oncopipe.ingest import input_warnings

MIN_SLICES = 16
MIN_SIDE_PX = 128
AIR_HU = -500.0  # a chest CT always holds air (outside the body, the lungs) below this
HU_SCALE = (-32768.0, 32767.0)  # every scanner's HU fit int16; beyond, not HU at all
SLICE_SPACING_MM = (0.5, 10.0)
FIELD_OF_VIEW_MM = (200.0, 600.0)
MAX_PIXEL_ASPECT = 1.1


def check(path: str | Path, vol: Volume, shape: tuple[int, int, int]) -> None:
    """Raise :class:`NotDatasetInputError` for a volume that is no chest CT in HU of a usable
    size; note a warning for unusual geometry. ``shape`` is the model's (D, H, W) input."""
    depth, height, width = vol.hu.shape
    min_slices, min_side = min(MIN_SLICES, shape[0]), min(MIN_SIDE_PX, shape[1], shape[2])
    if depth < min_slices or min(height, width) < min_side:
        raise NotDatasetInputError(
            f"{path}: {depth} slices of {height} x {width} pixels is far smaller than a "
            f"MosMedData CT study (at least {min_slices} slices of {min_side} x {min_side})")
    lo, hi = float(np.min(vol.hu)), float(np.max(vol.hu))
    if lo == hi:
        raise NotDatasetInputError(f"{path}: blank volume (every voxel is {lo:g}), not a CT "
                                   "study")
    if lo < HU_SCALE[0] or hi > HU_SCALE[1]:
        raise NotDatasetInputError(f"{path}: values from {lo:g} to {hi:g} are beyond any CT "
                                   "scale in Hounsfield units")
    if hi < 0:
        raise NotDatasetInputError(f"{path}: no voxel above {hi:g}, so no soft tissue or bone: "
                                   "not a CT in Hounsfield units")
    if lo > AIR_HU:
        raise NotDatasetInputError(
            f"{path}: no air (lowest value {lo:g}, air is -1000 HU): not a chest CT in "
            "Hounsfield units (a normalised or rescaled volume?)")
    dz, dy, dx = vol.spacing
    if not SLICE_SPACING_MM[0] <= dz <= SLICE_SPACING_MM[1]:
        input_warnings.warn(f"slices {dz:.3g} mm apart; MosMedData's are 8 mm apart, so the "
                            "model sees this study resampled to another depth than in training")
    fov = min(height * dy, width * dx)
    if not FIELD_OF_VIEW_MM[0] <= fov <= FIELD_OF_VIEW_MM[1]:
        input_warnings.warn(f"field of view {fov:.0f} mm across; MosMedData's chest CTs cover "
                            "about 300-460 mm")
    if max(dy, dx) > MAX_PIXEL_ASPECT * min(dy, dx):
        input_warnings.warn(f"pixels of {dy:.3g} x {dx:.3g} mm are not square, unlike every "
                            "MosMedData study")
