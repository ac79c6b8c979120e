"""MosMedData studies -> ``volumes.npy`` (N, 1, D, H, W) in [0, 1] + the common manifest.

Labels come from params: ``prepare.normal`` and ``prepare.abnormal`` list the categories of
each class (default CT-0 vs CT-1..CT-4; the Keras example's subset is CT-0 vs CT-2/CT-3,
i.e. ``abnormal: [CT-2, CT-3, CT-23]``). A study whose category is in neither list is
rejected as ``excluded category``, so nothing disappears without a row in the report.
Volumes are prepared in worker processes (:func:`oncopipe.ingest.parallel.ordered_map`: results in
input order, bounded in-flight memory) and appended one by one to the array file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from oncopipe.core.config import DatasetConfig
from oncopipe.core.errors import InputError, RejectError
from oncopipe.core.manifest import ManifestMeta, write_manifest
from oncopipe.datasets.mosmed import plausible
from oncopipe.datasets.mosmed.params import CLASS_NAMES, PREDICT_INPUT, PrepareParams
from oncopipe.datasets.mosmed.registry import Study, find_studies
from oncopipe.datasets.mosmed.volume import (
    CANONICAL,
    VolumeError,
    canonical,
    prepare_volume,
    read_nifti,
)
from oncopipe.ingest.arrays import ArrayWriter
from oncopipe.ingest.contact_sheet import write_contact_sheet
from oncopipe.ingest.parallel import default_workers, ordered_map
from oncopipe.ingest.rawfiles import RawLayoutError
from oncopipe.ingest.report import Report

log = logging.getLogger(__name__)

ARRAY_FILE = "volumes.npy"
SHEET_STUDIES = 4  # studies per class on the contact sheet (two tiles each)


@dataclass(frozen=True)
class _Job:
    study: Study
    path: Path
    params: PrepareParams


def _prepare_one(job: _Job) -> tuple[Study, np.ndarray | None, str, dict]:
    """Worker: (study, array or None, rejection reason, geometry) - never raises on bad input."""
    try:
        arr, vol = prepare_volume(job.path, job.params.shape, job.params.window,
                                  job.params.dtype)
    except RejectError as exc:
        return job.study, None, f"unreadable: {exc}", {}
    geometry = {
        "source_shape": "x".join(str(n) for n in vol.hu.shape),
        "spacing_mm": "x".join(f"{s:.4g}" for s in vol.spacing),
        "orientation": "".join(vol.source_axcodes),
    }
    return job.study, arr, "", geometry


def prepare(cfg: DatasetConfig, out_dir: Path) -> None:
    """Read ``cfg.raw`` and write the manifest, arrays, report and contact sheet to ``out_dir``."""
    params: PrepareParams = cfg.prepare
    class_names = CLASS_NAMES[cfg.task]
    raw = Path(cfg.raw)
    report = Report(f"prepare[{cfg.name}]")
    studies = find_studies(raw, report)
    jobs = []
    for study in studies:
        if params.label(study.category) is None:
            report.reject(study.path, f"excluded category: {study.category} is in neither "
                                      "prepare.normal nor prepare.abnormal")
        else:
            jobs.append(_Job(study, raw / study.path, params))
    log.info("%s: %d studies found, %d to prepare to %s (%s)", raw, len(studies), len(jobs),
             params.shape, params.dtype)

    rows: list[dict] = []
    sheet: dict[str, list[np.ndarray]] = {name: [] for name in class_names}
    workers = params.workers or default_workers()
    with ArrayWriter(out_dir / ARRAY_FILE, (1, *params.shape), params.dtype) as writer:
        for study, arr, reason, geometry in ordered_map(_prepare_one, jobs, workers=workers,
                                                        desc="mosmed volumes"):
            if arr is None:
                report.reject(study.path, reason)
                continue
            label = params.label(study.category)
            assert label is not None  # studies of an excluded category were never jobs
            index = writer.append(arr)
            report.keep()
            rows.append({
                "sample_id": study.study_id,
                "patient_id": study.study_id,  # one study per patient in this release
                "label": label,
                "array_file": ARRAY_FILE,
                "array_index": index,
                "source": study.path,
                "category": study.category,
                "mask_file": study.mask,
                **geometry,
            })
            tiles = sheet[class_names[label]]
            if len(tiles) < 2 * SHEET_STUDIES:
                tiles.extend(mid_slices(arr))
        if not rows:  # inside the writer: no empty volumes.npy is left behind
            raise RawLayoutError(f"{raw}: no usable MosMedData study (see the rejections "
                                 "above)")
        report.check_accounting()
    report.wrote(ARRAY_FILE)

    normalisation = {
        "kind": "hu_window",
        "window_hu": list(params.window),
        "formula": "(clip(hu, lo, hi) - lo) / (hi - lo)",
        "dtype": params.dtype,
        "stored_as": "x / 255" if params.dtype == "uint8" else "as is",
        "orientation": "".join(CANONICAL) + " (D, H, W) = (inferior->superior, "
                       "anterior->posterior, right->left)",
        "resampling": "linear, pixel centres, fixed shape " + "x".join(map(str, params.shape)),
    }
    meta = ManifestMeta(dataset=cfg.name, task=cfg.task, class_names=class_names,
                        layout="CDHW", normalisation=normalisation,
                        params_hash=cfg.params_hash, patient_level=True)
    df = pl.DataFrame(rows, schema_overrides={"label": pl.Int64, "array_index": pl.Int64})
    write_manifest(df, meta, out_dir / "manifest.parquet")
    report.wrote("manifest.parquet")
    write_contact_sheet(out_dir / "contact_sheet.png", sheet, tile=96, per_row=2 * SHEET_STUDIES)
    report.wrote("contact_sheet.png")
    counts = df.group_by("category").len().sort("category")
    report.extra["kept_by_category"] = dict(zip(counts["category"], counts["len"], strict=True))
    report.extra["kept_by_class"] = {
        name: int((df["label"] == i).sum()) for i, name in enumerate(class_names)}
    report.extra["masks_attached"] = int((df["mask_file"] != "").sum())
    if report.extra.get("masks_missing"):
        log.warning("%d mask file(s) listed but missing: %s", len(report.extra["masks_missing"]),
                    ", ".join(report.extra["masks_missing"][:5]))
    report.write(out_dir)


def mid_slices(arr: np.ndarray) -> list[np.ndarray]:
    """Axial and coronal mid-slices of a (1, D, H, W) volume, superior up in the coronal one."""
    vol = arr[0].astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0)
    depth, height, _ = vol.shape
    return [vol[depth // 2], vol[::-1, height // 2, :]]


def preprocess_one(cfg: DatasetConfig, path: Path,
                   point: tuple[float, float, float] | None = None) -> np.ndarray:
    """One ``.nii``/``.nii.gz`` study prepared exactly as :func:`prepare` does: (1, D, H, W).

    A volume that is no chest CT like the release's is refused, an unusual one noted as a
    warning (:mod:`.plausible`)."""
    if point is not None:
        raise InputError(f"{path}: a point is not used (the whole volume is classified)")
    params: PrepareParams = cfg.prepare
    try:
        arr, vol = prepare_volume(path, params.shape, params.window, params.dtype)
    except RejectError as exc:
        raise type(exc)(f"{exc}; expected {PREDICT_INPUT.expected}") from None
    plausible.check(path, vol, params.shape)
    return arr


def scan_view(cfg: DatasetConfig, path: Path) -> tuple[np.ndarray, dict]:
    """The study as a person looks through it: HU as int16 (D, H, W) in the canonical
    orientation the model's input is resampled from, with the voxel spacing; the geometry says
    so (``model_input``), and the page draws the model's Grad-CAM map over the whole study."""
    try:
        vol = canonical(path, *read_nifti(path))
    except RejectError as exc:
        raise type(exc)(f"{exc}; expected {PREDICT_INPUT.expected}") from None
    hu = vol.hu
    if not np.issubdtype(hu.dtype, np.number) or (hu.dtype.kind == "f"
                                                   and not np.isfinite(hu).all()):
        raise VolumeError(f"{path}: voxel values that are not finite numbers; expected "
                          f"{PREDICT_INPUT.expected}")
    volume = np.empty(hu.shape, np.int16)
    for k in range(len(volume)):  # slice by slice: no whole float copy of a large study
        np.clip(np.rint(hu[k]), -32768, 32767, out=volume[k], casting="unsafe")
    return volume, {"spacing_mm": [float(s) for s in vol.spacing], "model_input": "whole volume"}
