"""LIDC reader XML: all three mark types, any namespace style, and the real files' quirks."""

from __future__ import annotations

from pathlib import Path

import pytest

from oncopipe.datasets.lidc.demo import write as write_demo
from oncopipe.datasets.lidc.params import DemoParams
from oncopipe.datasets.lidc.reader_xml import AnnotationError, parse, root_name

BODY = """
  <{p}ResponseHeader>
    <{p}SeriesInstanceUid>1.2.3</{p}SeriesInstanceUid>
    <{p}StudyInstanceUID>1.2</{p}StudyInstanceUID>
  </{p}ResponseHeader>
  <{p}readingSession>
    <{p}servicingRadiologistID>x</{p}servicingRadiologistID>
    <{p}unblindedReadNodule>
      <{p}noduleID>IL057_127364</{p}noduleID>
      <{p}characteristics>
        <{p}subtlety>5</{p}subtlety><{p}internalStructure>1</{p}internalStructure>
        <{p}calcification>6</{p}calcification><{p}sphericity>4</{p}sphericity>
        <{p}margin>5</{p}margin><{p}lobulation>1</{p}lobulation>
        <{p}spiculation>1</{p}spiculation><{p}texture>5</{p}texture>
        <{p}malignancy>4</{p}malignancy>
      </{p}characteristics>
      <{p}roi>
        <{p}imageZposition>-120.5</{p}imageZposition>
        <{p}imageSOP_UID>1.2.3.10</{p}imageSOP_UID>
        <{p}inclusion>TRUE</{p}inclusion>
        <{p}edgeMap><{p}xCoord>10</{p}xCoord><{p}yCoord>20</{p}yCoord></{p}edgeMap>
        <{p}edgeMap><{p}xCoord>12</{p}xCoord><{p}yCoord>22</{p}yCoord></{p}edgeMap>
        <{p}edgeMap><{p}xCoord>10</{p}xCoord><{p}yCoord>20</{p}yCoord></{p}edgeMap>
      </{p}roi>
      <{p}roi>
        <{p}imageZposition>-120.5</{p}imageZposition>
        <{p}imageSOP_UID>1.2.3.10</{p}imageSOP_UID>
        <{p}inclusion>FALSE</{p}inclusion>
        <{p}edgeMap><{p}xCoord>11</{p}xCoord><{p}yCoord>21</{p}yCoord></{p}edgeMap>
      </{p}roi>
    </{p}unblindedReadNodule>
    <{p}unblindedReadNodule>
      <{p}noduleID>Nodule 002</{p}noduleID>
      <{p}roi>
        <{p}imageZposition>-118</{p}imageZposition>
        <{p}imageSOP_UID>1.2.3.11</{p}imageSOP_UID>
        <{p}inclusion>TRUE</{p}inclusion>
        <{p}edgeMap><{p}xCoord>40</{p}xCoord><{p}yCoord>41</{p}yCoord></{p}edgeMap>
      </{p}roi>
    </{p}unblindedReadNodule>
    <{p}nonNodule>
      <{p}nonNoduleID>3</{p}nonNoduleID>
      <{p}imageZposition>-115.5</{p}imageZposition>
      <{p}imageSOP_UID>1.2.3.12</{p}imageSOP_UID>
      <{p}locus><{p}xCoord>50</{p}xCoord><{p}yCoord>60</{p}yCoord></{p}locus>
    </{p}nonNodule>
  </{p}readingSession>
  <{p}readingSession>
    <{p}unblindedReadNodule>
      <{p}noduleID>4</{p}noduleID>
      <{p}characteristics/>
      <{p}roi>
        <{p}imageZposition>-120.5</{p}imageZposition>
        <{p}imageSOP_UID>1.2.3.10</{p}imageSOP_UID>
        <{p}inclusion>TRUE</{p}inclusion>
        <{p}edgeMap><{p}xCoord>9</{p}xCoord><{p}yCoord>19</{p}yCoord></{p}edgeMap>
        <{p}edgeMap><{p}xCoord>13</{p}xCoord><{p}yCoord>23</{p}yCoord></{p}edgeMap>
      </{p}roi>
      <{p}roi>
        <{p}imageSOP_UID>1.2.3.99</{p}imageSOP_UID>
        <{p}inclusion>TRUE</{p}inclusion>
      </{p}roi>
    </{p}unblindedReadNodule>
  </{p}readingSession>
"""

STYLES = {
    "default": ('<LidcReadMessage xmlns="http://www.nih.gov" '
                'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">', "", "</LidcReadMessage>"),
    "none": ("<LidcReadMessage>", "", "</LidcReadMessage>"),
    "prefixed": ('<nih:LidcReadMessage xmlns:nih="http://www.nih.gov">', "nih:",
                 "</nih:LidcReadMessage>"),
}


def _write(tmp_path: Path, style: str) -> Path:
    head, prefix, tail = STYLES[style]
    path = tmp_path / f"{style}.xml"
    path.write_text('<?xml version="1.0"?>\n' + head + BODY.format(p=prefix) + tail + "\n")
    return path


@pytest.mark.parametrize("style", sorted(STYLES))
def test_all_mark_types_in_any_namespace_style(tmp_path, style):
    msg = parse(_write(tmp_path, style))
    assert (msg.series_uid, msg.study_uid, msg.n_sessions) == ("1.2.3", "1.2", 2)
    big, small, unrated = msg.nodules
    assert (big.reader, big.nodule_id, big.kind) == (0, "IL057_127364", "nodule")
    assert big.characteristics["malignancy"] == 4 and len(big.characteristics) == 9
    assert [r.inclusion for r in big.rois] == [True, False]  # the hole is kept, marked
    assert big.rois[0].points == ((10, 20), (12, 22), (10, 20))
    assert big.rois[0].z == -120.5 and big.rois[0].sop_uid == "1.2.3.10"
    assert (small.nodule_id, small.kind, small.characteristics) == ("Nodule 002", "small_nodule",
                                                                     None)
    (non,) = msg.non_nodules
    assert (non.reader, non.nodule_id, non.z, non.sop_uid, non.point) == (
        0, "3", -115.5, "1.2.3.12", (50, 60))
    # an empty characteristics element: unrated, still a >= 3 mm nodule (it has a contour)
    assert (unrated.reader, unrated.characteristics, unrated.kind) == (1, None, "nodule")
    assert len(unrated.rois) == 1
    assert msg.problems == ["reader 1 nodule '4': roi without imageZposition or edgeMap, ignored"]


def test_not_a_ct_read_or_not_xml_raises_naming_the_file(tmp_path):
    idri = tmp_path / "071.xml"
    idri.write_text('<IdriReadMessage xmlns="http://www.nih.gov"></IdriReadMessage>')
    assert root_name(idri) == "IdriReadMessage"
    with pytest.raises(AnnotationError, match="071.xml.*IdriReadMessage"):
        parse(idri)
    broken = tmp_path / "broken.xml"
    broken.write_text("<LidcReadMessage><readingSession>")
    with pytest.raises(AnnotationError, match="broken.xml: not well-formed"):
        parse(broken)


def test_bad_rating_is_reported_not_guessed(tmp_path):
    path = _write(tmp_path, "none")
    path.write_text(path.read_text().replace("<malignancy>4<", "<malignancy>high<"))
    msg = parse(path)
    assert "malignancy" not in msg.nodules[0].characteristics
    assert any("malignancy='high'" in p for p in msg.problems)


def test_non_finite_numbers_are_reported_not_a_crash(tmp_path):
    path = _write(tmp_path, "none")
    text = path.read_text().replace("<malignancy>4<", "<malignancy>NaN<")
    path.write_text(text.replace("<xCoord>50<", "<xCoord>inf<"))
    msg = parse(path)
    assert "malignancy" not in msg.nodules[0].characteristics
    assert msg.non_nodules == []
    assert any("malignancy='NaN'" in p for p in msg.problems)
    assert any("non-nodule '3': no imageZposition or locus" in p for p in msg.problems)


def test_demo_xml_quirks(tmp_path):
    raw = tmp_path / "raw"
    write_demo(DemoParams(seed=5, n_patients=8, rows=64, pixel_spacing=3.0, n_slices=20,
                          nodules=(2, 2), small_nodules=(1, 1), non_nodules=(1, 1)), raw)
    xmls = sorted(raw.rglob("*.xml"))
    roots = sorted(root_name(p) for p in xmls)
    assert roots.count("IdriReadMessage") == 1
    reads = [parse(p) for p in xmls if root_name(p) == "LidcReadMessage"]
    assert len(reads) == 9  # 8 patients, one with two CT series
    assert all(r.n_sessions == 4 for r in reads)
    nodules = [m for r in reads for m in r.nodules]
    kinds = {m.kind for m in nodules}
    assert kinds == {"nodule", "small_nodule"}
    assert sum(m.characteristics is None and m.kind == "nodule" for m in nodules) == 1
    assert sum(not roi.inclusion for m in nodules for roi in m.rois) == 1
    assert all(len(m.characteristics) == 9 for m in nodules if m.characteristics)
    ids = {m.nodule_id.split("_")[0].split(" ")[0] for m in nodules}
    assert {"Nodule", "IL057", "MI014"} <= ids and any(i.isdigit() for i in ids)
    contours = [roi.points for m in nodules for roi in m.rois if len(roi.points) > 1]
    assert all(pts[0] == pts[-1] for pts in contours)  # closed, as real contours are
    assert sum(len(r.non_nodules) for r in reads) > 0
