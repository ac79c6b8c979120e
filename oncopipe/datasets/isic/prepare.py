"""ISIC 2020 preparation: labelled JPEGs -> (N, 3, size, size) uint8 + the common manifest.

The photographs range from 480 x 640 to 6000 x 4000 pixels. Each is decoded at the coarsest
JPEG scale (1/2, 1/4, 1/8) that keeps its shorter side at least ``size`` (a 6000 x 4000
photograph for ``size`` 500 decodes at 1/4, about 3-4x faster than a full decode), then
shrunk to ``size`` x ``size`` (squashed, as the reference method did, or centre-cropped).
Patient ids come from ``patient_id``, so the shard stage keeps each patient in one split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from oncopipe.config import DatasetConfig
from oncopipe.datasets.isic import reader
from oncopipe.imagedump import Decode, dump_meta, load_input, write_dump
from oncopipe.report import Report

CLASS_NAMES = ("benign", "malignant")


@dataclass(frozen=True)
class PrepareParams:
    size: int = 500  # output side in pixels (the reference used 500)
    fit: Literal["resize", "center_crop"] = "resize"
    reduced_decode: bool = True  # decode JPEGs at 1/2, 1/4 or 1/8 scale where size allows
    image_dir: str = "jpeg/train"  # relative to raw; the Kaggle train/ folder holds DICOMs
    test_dir: str = "jpeg/test"  # unlabelled; counted in the report, not used
    duplicates: str = "ISIC_2020_Training_Duplicates.csv"  # honoured when present; "" = off
    workers: int = 0  # decoding processes; 0: one per core (up to 8). Outputs do not depend on it.

    def check(self) -> None:
        if not 8 <= self.size <= 4096:
            raise ValueError("size must be in [8, 4096]")
        if self.workers < 0:
            raise ValueError("workers must be >= 0")


def decode_spec(params: PrepareParams) -> Decode:
    return Decode(size=(params.size, params.size), fit=params.fit, reduced=params.reduced_decode)


def prepare(cfg: DatasetConfig, out_dir: Path) -> None:
    p: PrepareParams = cfg.prepare
    report = Report(f"prepare_{cfg.name}")
    candidates = reader.scan_train(cfg.raw, p.image_dir, p.duplicates, report)
    report.extra["not_used"] = reader.scan_test(cfg.raw, p.test_dir)
    meta = dump_meta(cfg, CLASS_NAMES, source="RGB", resize=f"{p.fit} to {p.size}x{p.size}")
    write_dump(candidates, decode_spec(p), meta, report, out_dir, workers=p.workers,
               extra_schema=reader.EXTRA_SCHEMA)


def preprocess_one(cfg: DatasetConfig, path: Path,
                   point: tuple[float, float, float] | None = None) -> np.ndarray:
    """One photograph as ``prepare`` stores it: (3, size, size) uint8."""
    return load_input(path, decode_spec(cfg.prepare), point)
