"""LIDC-IDRI: CT series (DICOM) + four readers' XML -> lesion table -> HU-normalised crops.

Two steps, two DVC stages: ``lidc_lesions`` (:mod:`.lesions`: headers and XML only, so a cohort
can be inspected before any pixel work) writes ``lesions.parquet``; ``prepare_lidc`` (the
generic prepare stage calling :func:`prepare`, :mod:`.samples`) crops every lesion of the table
into 2D and 3D arrays and writes the common manifest. See docs/lidc.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oncopipe.config import DatasetConfig
from oncopipe.datasets.lidc import crops, demo, samples
from oncopipe.datasets.lidc.params import DemoParams, PrepareParams
from oncopipe.datasets.lidc.series import read_volume

TASKS: tuple[str, ...] = ("nodule_type", "malignancy")
__all__ = ["TASKS", "DemoParams", "PrepareParams", "prepare", "preprocess_one", "write_demo"]


def write_demo(cfg: DatasetConfig, out_dir: Path) -> None:
    """Synthetic LIDC-IDRI in the real layouts (see :mod:`.demo`)."""
    demo.write_demo(cfg.demo, out_dir)


def prepare(cfg: DatasetConfig, out_dir: Path) -> None:
    """Crop the lesions of ``cfg.prepare.lesion_table`` into ``out_dir`` (see :mod:`.samples`)."""
    samples.prepare(cfg, out_dir)


def preprocess_one(cfg: DatasetConfig, path: Path,
                   point: tuple[float, float, float] | None = None) -> np.ndarray:
    """One CT series folder + a point (x, y, z patient mm, LPS) -> one crop, as in the manifest.

    2D: the slice nearest ``z``, centred on (x, y); 3D: the cube centred on the point.
    """
    if point is None:
        raise ValueError(f"{path}: LIDC needs a point (x, y, z in patient mm) to crop around")
    header = samples.load_series(Path(path))
    volume = read_volume(header)
    p = cfg.prepare.crops
    x, y, z = (float(v) for v in point)
    if p.input == "2d":
        k = int(np.abs(header.zs - z).argmin())
        hu = crops.crop_2d(volume[k], header, x, y, p)
    else:
        hu = crops.crop_3d(crops.volume_image(volume, header), (x, y, z), p)
    return crops.window(hu, p.hu_window)[None]

