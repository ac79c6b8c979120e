"""ISIC 2020 preparation: labelled JPEGs -> (N, 3, size, size) uint8 + the common manifest.

The photographs range from 480 x 640 to 6000 x 4000 pixels. Each is decoded at the coarsest
JPEG scale (1/2, 1/4, 1/8) that keeps its shorter side at least ``size`` (a 6000 x 4000
photograph for ``size`` 500 decodes at 1/4, about 3-4x faster than a full decode), then
shrunk to ``size`` x ``size`` (squashed, as the reference method did, or centre-cropped).
Patient ids come from ``patient_id``, so the shard stage keeps each patient in one split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oncopipe.core.config import DatasetConfig
from oncopipe.datasets.isic import reader
from oncopipe.datasets.isic.params import CLASS_NAMES, PREDICT_INPUT, PrepareParams
from oncopipe.imagefiles.imagedump import Decode, dump_meta, load_input, write_dump
from oncopipe.ingest.report import Report


def decode_spec(params: PrepareParams) -> Decode:
    return Decode(size=(params.size, params.size), fit=params.fit, reduced=params.reduced_decode)


def prepare(cfg: DatasetConfig, out_dir: Path) -> None:
    p: PrepareParams = cfg.prepare
    report = Report(f"prepare_{cfg.name}")
    candidates = reader.scan_train(cfg.raw, p.image_dir, p.duplicates, report)
    report.extra["not_used"] = reader.scan_test(cfg.raw, p.test_dir)
    meta = dump_meta(cfg, CLASS_NAMES[cfg.task], source="RGB",
                     resize=f"{p.fit} to {p.size}x{p.size}")
    write_dump(candidates, decode_spec(p), meta, report, out_dir, workers=p.workers,
               extra_schema=reader.EXTRA_SCHEMA)


def preprocess_one(cfg: DatasetConfig, path: Path,
                   point: tuple[float, float, float] | None = None) -> np.ndarray:
    """One photograph as ``prepare`` stores it: (3, size, size) uint8."""
    return load_input(path, decode_spec(cfg.prepare), PREDICT_INPUT, point)
