"""MosMedData (COVID19_1110): chest CT in NIfTI -> HU-windowed 64 x 128 x 128 volumes.

See docs/mosmed.md. Modules: :mod:`.registry` (which studies exist, their categories),
:mod:`.volume` (read, reorient from the affine, window, resample), :mod:`.prepare` (the
prepare step), :mod:`.demo` (synthetic data in the release layout).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oncopipe.datasets.mosmed.demo import DemoParams, write_demo
from oncopipe.datasets.mosmed.prepare import CLASS_NAMES, PrepareParams, prepare
from oncopipe.datasets.mosmed.volume import prepare_volume

TASKS: tuple[str, ...] = ("binary",)


def preprocess_one(cfg, path: Path, point: tuple[float, float, float] | None = None
                   ) -> np.ndarray:
    """One ``.nii``/``.nii.gz`` study prepared exactly as :func:`prepare` does: (1, D, H, W)."""
    if point is not None:
        raise ValueError(f"{path}: a point is not used (the whole volume is classified)")
    params: PrepareParams = cfg.prepare
    arr, _ = prepare_volume(path, params.shape, params.window, params.dtype)
    return arr


__all__ = ["CLASS_NAMES", "TASKS", "DemoParams", "PrepareParams", "prepare", "preprocess_one",
           "write_demo"]
