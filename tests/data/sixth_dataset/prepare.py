"""``ddsm`` preparation: ``<label>/<patient>_<k>.png`` -> (N, 3, 32, 32) uint8 + the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oncopipe.core.config import DatasetConfig
from oncopipe.datasets.ddsm.params import CLASS_NAMES, PREDICT_INPUT, SIDE
from oncopipe.imagefiles.imagedump import Candidate, Decode, dump_meta, load_input, write_dump
from oncopipe.ingest.rawfiles import RawLayoutError, walk
from oncopipe.ingest.report import Report

DECODE = Decode(size=(SIDE, SIDE), expect=(SIDE, SIDE), reduced=False)


def prepare(cfg: DatasetConfig, out_dir: Path) -> None:
    report = Report(f"prepare_{cfg.name}")
    names = CLASS_NAMES[cfg.task]
    candidates = []
    for path in walk(cfg.raw, report).files:
        source = path.relative_to(cfg.raw).as_posix()
        if path.parent.parent != cfg.raw or path.parent.name not in names:
            report.reject(source, f"unexpected location: not in {' or '.join(names)}/")
        elif path.suffix.lower() != ".png":
            report.reject(source, "unexpected entry: not a .png file")
        else:
            candidates.append(Candidate(sample_id=path.stem, patient_id=path.stem.split("_")[0],
                                        label=names.index(path.parent.name), path=path,
                                        source=source))
    if not candidates:
        raise RawLayoutError(f"{cfg.raw}: no PNG crops in {' or '.join(names)}/")
    meta = dump_meta(cfg, names, source="RGB as stored")
    write_dump(candidates, DECODE, meta, report, out_dir, workers=cfg.prepare.workers)


def preprocess_one(cfg: DatasetConfig, path: Path,
                   point: tuple[float, float, float] | None = None) -> np.ndarray:
    """One crop as ``prepare`` stores it: (3, 32, 32) uint8."""
    return load_input(path, DECODE, PREDICT_INPUT, point)
