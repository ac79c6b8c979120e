"""BreakHis raw tree -> common manifest, ``images.npy``, rejects, report, contact sheet.

Labels come from the folders and file names only after :mod:`.tree` has checked that both
agree; files that fail there (or are outside the magnification filter) are rejected with the
reason before any pixel is read. The rest go to the shared image-dump writer
(:mod:`oncopipe.imagefiles.imagedump`), which decodes in worker processes with bounded memory and
rejects unreadable files. An image that is not 700 x 460 (the release has a few) is resized
like the others and counted in the report (``resized_from_other_size``) when each side is
within 5% of the release's; farther off it is not a BreakHis field and is rejected (from its
header, before decoding). Extra manifest columns:
``magnification`` (40/100/200/400), ``subtype``, ``tumor_class`` and ``slide_folder``, so any
task or magnification subset can be selected later without re-reading the PNGs.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl

from oncopipe.core.config import DatasetConfig
from oncopipe.datasets.breakhis.params import CLASS_NAMES, PREDICT_INPUT, PatientUnit, PrepareParams
from oncopipe.datasets.breakhis.tree import TreeImage, classify, find_breast_root
from oncopipe.imagefiles.imagedump import Candidate, Decode, dump_meta, load_input, write_dump
from oncopipe.ingest.rawfiles import walk
from oncopipe.ingest.report import Report

log = logging.getLogger(__name__)

NATIVE_HW = (460, 700)  # the release's (height, width); the few other sizes are resized, counted
SIZE_TOLERANCE = 0.05  # per side: the release's odd sizes (700 x 456) are within 1%

EXTRA_SCHEMA: dict[str, pl.DataType] = {
    "magnification": pl.Int64(),
    "subtype": pl.String(),
    "tumor_class": pl.String(),
    "slide_folder": pl.String(),
}


def decode_spec(params: PrepareParams) -> Decode:
    """How every BreakHis PNG is decoded, in ``prepare`` and in ``preprocess_one`` alike."""
    return Decode(size=(params.image_size, params.image_size), expect=NATIVE_HW,
                  off_size="resize", fit=params.fit, reduced=False, tolerance=SIZE_TOLERANCE)


def prepare(cfg: DatasetConfig, out_dir: Path) -> None:
    p = cfg.prepare
    class_names = CLASS_NAMES[cfg.task]
    report = Report("prepare_breakhis")
    breast = find_breast_root(cfg.raw)
    files = walk(cfg.raw, report).files
    log.info("found %d files under %s (tree at %s)", len(files), cfg.raw, breast)

    wanted = set(p.magnifications)
    found: list[TreeImage] = []
    for file in files:
        got = classify(file, cfg.raw, breast)
        if isinstance(got, str):
            report.reject(file.relative_to(cfg.raw).as_posix(), got)
        elif f"{got.name.magnification}X" not in wanted:
            report.reject(got.source, f"filtered: magnification {got.name.magnification}X "
                                      "is not in breakhis.prepare.magnifications")
        else:
            found.append(got)
    log.info("%d images pass the name and folder checks, %d files rejected so far",
             len(found), len(report.rejects))

    candidates = [_candidate(img, cfg.task, class_names, p.patient_unit) for img in found]
    report.extra.update(patient_unit=p.patient_unit,
                        magnifications=list(p.magnifications),
                        patients_spanning_folders=_shared_patients(candidates))
    meta = dump_meta(cfg, class_names, source="RGB PNG 700 x 460",
                     resize=f"{p.fit} to {p.image_size} x {p.image_size}")
    df = write_dump(candidates, decode_spec(p), meta, report, out_dir, workers=p.workers,
                    extra_schema=EXTRA_SCHEMA)
    log.info("kept %d images of %d patients", len(df), df["patient_id"].n_unique())


def _candidate(img: TreeImage, task: str, class_names: tuple[str, ...],
               unit: PatientUnit) -> Candidate:
    name = img.name
    label = name.tumor_class if task == "binary" else name.subtype
    return Candidate(
        sample_id=name.stem,
        patient_id=name.patient_id(unit),
        label=class_names.index(label),
        path=img.path,
        source=img.source,
        extra={"magnification": name.magnification, "subtype": name.subtype,
               "tumor_class": name.tumor_class, "slide_folder": name.folder},
    )


def _shared_patients(candidates: list[Candidate]) -> dict[str, list[str]]:
    """Patient ids that span several folders (e.g. 14-13412: ductal and lobular carcinoma)."""
    folders: dict[str, set[str]] = defaultdict(set)
    for c in candidates:
        folders[c.patient_id].add(c.extra["slide_folder"])
    return {k: sorted(v) for k, v in sorted(folders.items()) if len(v) > 1}


def preprocess_one(cfg: DatasetConfig, path: Path,
                   point: tuple[float, float, float] | None = None) -> np.ndarray:
    """One BreakHis PNG as ``prepare`` stores it: ``(3, S, S)`` uint8 (no ``point``).

    Raises :class:`oncopipe.imagefiles.images.ImageError` for a file ``prepare`` would reject.
    """
    return load_input(path, decode_spec(cfg.prepare), PREDICT_INPUT, point)
