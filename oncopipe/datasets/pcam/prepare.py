"""PCam preparation: labelled ``train/*.tif`` -> (N, 3, 96, 96) uint8 + the common manifest.

Patches are stored at their native 96 x 96 (a patch of another size is rejected, not
resized: PCam's label is defined on the centre 32 x 32 pixels, which a resize would move).
This Kaggle version carries no patient or slide ids, so each image is its own split unit
(``patient_level=False`` in the manifest): patches of one slide can land in different splits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oncopipe.core.config import DatasetConfig
from oncopipe.datasets.pcam import reader
from oncopipe.datasets.pcam.params import CLASS_NAMES, PREDICT_INPUT
from oncopipe.imagefiles.imagedump import Decode, dump_meta, load_input, write_dump
from oncopipe.ingest.report import Report

SIDE = 96
DECODE = Decode(size=(SIDE, SIDE), expect=(SIDE, SIDE), reduced=False)


def prepare(cfg: DatasetConfig, out_dir: Path) -> None:
    report = Report(f"prepare_{cfg.name}")
    candidates = reader.scan_train(cfg.raw, report)
    report.extra["not_used"] = reader.scan_test(cfg.raw)
    meta = dump_meta(cfg, CLASS_NAMES[cfg.task], source="RGB as stored", patient_level=False)
    write_dump(candidates, DECODE, meta, report, out_dir, workers=cfg.prepare.workers)


def preprocess_one(cfg: DatasetConfig, path: Path,
                   point: tuple[float, float, float] | None = None) -> np.ndarray:
    """One patch file as ``prepare`` stores it: (3, 96, 96) uint8."""
    return load_input(path, DECODE, PREDICT_INPUT, point)
