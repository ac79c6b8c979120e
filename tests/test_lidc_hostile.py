"""Hostile and out-of-range LIDC input: every file ends as data or as a named reject.

DICOM: elements whose length does not fit their VR, several values where the standard allows
one, numbers no integer holds, corrupt or oversized deflated datasets, a Rust decoder's panic,
sizes declared far beyond the file or the limits (checked before any allocation, here under a
memory cap). Whole series: one slice stored unsigned in a signed series, two slices at one z
with different pixels, PixelSpacing differing by float rounding. XML: ratings outside their
range, too many reading sessions or rois, a DTD, a file over the size limit.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from fuzz import harness
from fuzz.families import dicom as dicom_family
from oncopipe.core import limits
from oncopipe.datasets.lidc import reader_xml
from oncopipe.datasets.lidc.demo import write as write_demo
from oncopipe.datasets.lidc.layout import header_hash, read_header
from oncopipe.datasets.lidc.params import DemoParams
from oncopipe.datasets.lidc.pixels import read_series
from oncopipe.datasets.lidc.series import read_headers, read_slice_hu

DEMO = DemoParams(seed=3, n_patients=8, rows=64, pixel_spacing=3.0, n_slices=16,
                  nodules=(1, 1), small_nodules=(1, 1), non_nodules=(1, 1))


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("demo")
    write_demo(DEMO, raw)
    return raw


@pytest.fixture
def series(demo, tmp_path) -> list[Path]:
    """A copy of patient 1's series (signed, classic layout), its slices in z order."""
    folder = next(p.parent for p in sorted(demo.rglob("LIDC-IDRI-0001/*/*/*.dcm")))
    copy = tmp_path / "series"
    shutil.copytree(folder, copy)
    return sorted(copy.glob("*.dcm"), key=lambda p: float(
        pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))


@pytest.fixture
def small_limits(monkeypatch):
    def set_limits(**values: int) -> None:
        monkeypatch.setenv(limits._ENV, json.dumps(values))
    return set_limits


def _reject(path: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        series, rejects = read_headers([path])
    assert not series and [p for p, _ in rejects] == [path], rejects
    return rejects[0][1]


def _edit(path: Path, fn) -> None:
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(path)


def _patch(path: Path, tag: tuple[int, int], vr: bytes, value: bytes) -> None:
    """Rewrite one explicit-VR element (2-byte length) with any VR and value bytes."""
    data = path.read_bytes()
    at = data.index(struct.pack("<HH", *tag))
    old = int.from_bytes(data[at + 6:at + 8], "little")
    path.write_bytes(data[:at + 4] + vr + len(value).to_bytes(2, "little") + value
                     + data[at + 8 + old:])


# --- DICOM headers ---------------------------------------------------------------------

def test_length_that_does_not_fit_the_vr_is_a_reject(series):
    """pydicom raises BytesLengthException only when the value is first used."""
    f = series[0]
    _patch(f, (0x0028, 0x0010), b"US", b"\x40\x00\x00")  # Rows: 3 bytes of US
    assert _reject(f).startswith("unreadable DICOM")


@pytest.mark.parametrize(("tag", "vr", "value", "name"), [
    ((0x0020, 0x0013), b"IS", b"1\\2 ", "InstanceNumber"),
    ((0x0028, 0x1053), b"DS", b"1\\2 ", "RescaleSlope"),
    ((0x0028, 0x1052), b"DS", b"-1024\\0 ", "RescaleIntercept"),
    ((0x0028, 0x0120), b"US", b"\x00\x00\x01\x00", "PixelPaddingValue"),
])
def test_several_values_where_one_is_allowed(series, tag, vr, value, name):
    f = series[1]
    if name == "PixelPaddingValue":
        _edit(f, lambda ds: ds.add_new(0x00280120, "US", 0))
    _patch(f, tag, vr, value)
    reason = _reject(f)
    assert reason.startswith(f"bad header: {name}") and "has 2 values, expected one" in reason


@pytest.mark.parametrize(("value", "why"), [
    (b"inf ", "cannot convert float infinity to integer"),  # pydicom raises on first use
    (b"99999999999999999999", "outside the range of an integer string"),
])
def test_instance_number_no_integer_holds(series, value, why):
    f = series[2]
    _patch(f, (0x0020, 0x0013), b"IS", value)
    assert why in _reject(f)


def test_columns_of_537_million_is_refused_before_allocation(series, tmp_path):
    """Columns as a 4-byte UL: the header declares 64 x 537 M pixels of a 10 KB file."""
    f = series[3]
    _patch(f, (0x0028, 0x0011), b"UL", struct.pack("<I", 537_000_000))
    assert "Rows x Columns: declares" in _reject(f)
    outcome, detail = harness.run_one(dicom_family.FAMILY, f.read_bytes(), tmp_path,
                                      mem_bytes=256 << 20)
    assert outcome == "rejected", detail


def test_corrupt_length_field_allocates_nothing(series):
    """An element claiming 1 GiB of a 10 KB file: the read is clamped to what the file holds
    (CPython allocates the size asked for before reading)."""
    f = series[4]
    data = bytearray(f.read_bytes())
    at = data.index(b"\x08\x00\x18\x00UI")  # SOPInstanceUID: 2-byte length, rewritten as OB
    data[at + 4:at + 8] = b"OB\x00\x00"
    data[at + 8:at + 8] = struct.pack("<I", 0x3FFFFFFF)
    f.write_bytes(bytes(data))
    tracemalloc.start()
    try:
        _reject(f)  # the truncated dataset lacks the tags after the element
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"peak {peak >> 20} MiB"


def test_file_over_the_size_limit_is_not_parsed(series, small_limits):
    small_limits(max_dicom_bytes=1000)
    reason = _reject(series[5])
    assert reason.startswith("too large:") and "max_dicom_bytes" in reason


def _deflated(path: Path, blank: bool = False) -> None:
    def deflate(ds):
        if blank:
            ds.PixelData = bytes(len(ds.PixelData))
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    _edit(path, deflate)


def test_deflated_slice_reads_like_the_plain_one(series):
    f = series[6]
    plain = read_slice_hu(f)
    _deflated(f)
    np.testing.assert_array_equal(read_slice_hu(f), plain)


def test_corrupt_deflate_stream_is_a_reject(series):
    f = series[6]
    _deflated(f)
    data = bytearray(f.read_bytes())
    data[-300:-200] = b"\xff" * 100
    f.write_bytes(bytes(data))
    assert _reject(f).startswith("unreadable DICOM")


def test_deflated_dataset_inflating_past_the_limit(series, small_limits):
    f = series[7]
    _deflated(f, blank=True)  # 8 KB of zeros deflate to a few bytes
    assert f.stat().st_size < 4000
    small_limits(max_dicom_bytes=4000)
    reason = _reject(f)
    assert "(inflated dataset)" in reason and "max_dicom_bytes" in reason


@pytest.mark.parametrize("pixel_at", [65536 - 64, 65536 - 12, 65536 - 8, 65536, 70000])
def test_a_header_past_the_first_64_kib_reads_like_a_short_one(series, pixel_at):
    """The header pass parses a file's first 64 KiB from memory, and the file itself when the
    parse wants more: a header whose Pixel Data element ends before, at or past that point
    gives the same values, layout and pixels (a private element pushes it there)."""
    f = series[5]
    values, layout = read_header(f, ["SOPInstanceUID", "ImagePositionPatient"])
    (short,), _ = read_headers([f])
    hu = read_series(short).hu(slice(None))
    ds = pydicom.dcmread(f)
    ds.add_new(0x00090010, "LO", "PAD")
    ds.add_new(0x00091000, "OB", b"")
    ds.save_as(f)
    ds[0x00091000].value = bytes(pixel_at - f.read_bytes().index(b"\xe0\x7f\x10\x00"))
    ds.save_as(f)
    assert f.read_bytes().index(b"\xe0\x7f\x10\x00") == pixel_at
    long_values, long_layout = read_header(f, ["SOPInstanceUID", "ImagePositionPatient"])
    assert long_values == values
    assert long_layout == dataclasses.replace(
        layout, size=f.stat().st_size, header_bytes=pixel_at + 12,
        header_hash=header_hash(f.read_bytes()[:pixel_at + 12]))
    (long,), rejects = read_headers([f])
    assert not rejects
    np.testing.assert_array_equal(read_series(long).hu(slice(None)), hu)


def test_a_decoder_panic_is_caught_and_the_next_plugin_tried():
    """pylibjpeg-rle panics (a BaseException) on this RLE stream; pydicom's decoder reads it."""
    path = Path(__file__).parent / "data" / "fuzz" / "dicom" / "rle-plugin-panic.bin"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hu = read_slice_hu(path)
        ds = pydicom.dcmread(path)
    assert hu.shape == (ds.Rows, ds.Columns)


def test_series_over_the_voxel_limit(series, small_limits):
    small_limits(max_voxels=10 * 64 * 64)
    found, rejects = read_headers(series)
    assert not found and len(rejects) == len(series)
    assert all("max_voxels" in reason for _, reason in rejects)


# --- whole series ------------------------------------------------------------------------

def test_one_unsigned_slice_in_a_signed_series_is_set_aside(series):
    f = series[8]
    _edit(f, lambda ds: setattr(ds, "PixelRepresentation", 0))
    found, rejects = read_headers(series)
    assert [s.path for s in found[0].slices] == [p for p in series if p != f]
    assert rejects == [(f, "PixelRepresentation 0 (unsigned) in a series whose other "
                           f"{len(series) - 1} slices are 1 (signed): its pixels would be "
                           "misread")]


def test_two_slices_at_one_z_with_other_pixels_reject_the_series(series):
    copy = series[9].with_name("zz_copy.dcm")
    shutil.copy(series[9], copy)

    def brighten(ds):
        ds.PixelData = (ds.pixel_array + 100).astype(ds.pixel_array.dtype).tobytes()
    _edit(copy, brighten)
    found, rejects = read_headers([*series, copy])
    assert not found and len(rejects) == len(series) + 1
    assert all("with other pixels" in reason for _, reason in rejects)


def test_an_identical_copy_at_one_z_is_still_a_duplicate(series):
    copy = series[9].with_name("zz_copy.dcm")
    shutil.copy(series[9], copy)
    found, rejects = read_headers([*series, copy])
    assert len(found[0].slices) == len(series)
    assert [(p, r.split(":")[0]) for p, r in rejects] == [(copy, "duplicate z")]


@pytest.mark.parametrize(("delta", "kept"), [(1e-6, True), (0.01, False)])
def test_pixel_spacing_differing_by_rounding_only_is_one_series(series, delta, kept):
    def nudge(ds):
        ds.PixelSpacing = [float(v) + delta for v in ds.PixelSpacing]
    _edit(series[10], nudge)
    found, rejects = read_headers(series)
    assert bool(found) == kept
    if kept:
        assert len(found[0].slices) == len(series) and not rejects
    else:
        assert all("PixelSpacing differ" in r for _, r in rejects)


# --- XML -----------------------------------------------------------------------------------

@pytest.fixture
def xml(demo, tmp_path) -> Path:
    """A copy of patient 1's reader XML (default namespace)."""
    path = tmp_path / "read.xml"
    shutil.copy(next(demo.rglob("LIDC-IDRI-0001/*/*/*.xml")), path)
    return path


def test_rating_beyond_its_range_sets_the_mark_aside(xml):
    text = xml.read_text()
    first = text.index("<malignancy>")
    value = text[first + len("<malignancy>"):text.index("<", first + 1)]
    xml.write_text(text.replace(f"<malignancy>{value}<", "<malignancy>9223372036854775808<", 1))
    before = len(reader_xml.parse(xml).nodules)
    msg = reader_xml.parse(xml)
    assert len(msg.nodules) == before
    assert any("malignancy='9223372036854775808' outside 1-5, mark not used" in p
               for p in msg.problems)
    assert all(v <= 6 for m in msg.nodules for v in (m.characteristics or {}).values())


def _copy_element(text: str, tag: str, times: int) -> str:
    start = text.index(f"<{tag}>")
    end = text.index(f"</{tag}>", start) + len(f"</{tag}>")
    return text[:end] + text[start:end] * times + text[end:]


def test_more_reading_sessions_than_lidc_has(xml):
    xml.write_text(_copy_element(xml.read_text(), "readingSession", 996))
    with pytest.raises(reader_xml.AnnotationError,
                       match=r"readingSession elements: declares 5 \(reading_sessions\)"):
        reader_xml.parse(xml)


def test_copied_rois_past_the_limit(xml, small_limits):
    small_limits(max_rois=50)
    xml.write_text(_copy_element(xml.read_text(), "roi", 60))
    with pytest.raises(reader_xml.AnnotationError, match=r"roi elements: declares 51 \(rois\)"):
        reader_xml.parse(xml)


def test_copied_rois_within_the_limit_are_dropped_as_copies(xml):
    before = reader_xml.parse(xml)
    xml.write_text(_copy_element(xml.read_text(), "roi", 40))
    after = reader_xml.parse(xml)
    assert after.nodules == before.nodules
    assert any("40 exact copies of an roi, ignored" in p for p in after.problems)


def test_dtd_and_entities_are_refused(xml):
    bomb = ('<?xml version="1.0"?>\n<!DOCTYPE LidcReadMessage [<!ENTITY a "aaaaaaaaaa">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n')
    body = xml.read_text().split("?>", 1)[1]
    xml.write_text(bomb + body.replace("</ResponseHeader>", "&b;</ResponseHeader>", 1))
    for read in (reader_xml.root_name, reader_xml.parse):
        with pytest.raises(reader_xml.AnnotationError, match="document type declaration"):
            read(xml)


def test_xml_over_the_size_limit_is_not_parsed(xml, small_limits):
    small_limits(max_table_bytes=1000)
    with pytest.raises(reader_xml.AnnotationError, match="max_table_bytes"):
        reader_xml.parse(xml)



def test_mark_over_the_point_limit_is_a_recorded_reject(demo, tmp_path, small_limits):
    """One reader's mark with more contour points than limits.max_mark_points never reaches
    clustering (which compares every point of two marks): it is set aside, recorded, and the
    other marks are grouped as before."""
    from oncopipe.datasets.lidc import lesions
    from oncopipe.datasets.lidc.params import PrepareParams

    raw = tmp_path / "raw"
    shutil.copytree(demo, raw)
    xml = next(raw.rglob("LIDC-IDRI-0001/*/*/*.xml"))
    before = reader_xml.parse(xml)
    small_limits(max_mark_points=400)
    text = xml.read_text()
    xml.write_text(_copy_element(text, "edgeMap", 500))
    after = reader_xml.parse(xml)
    assert len(after.nodules) == len(before.nodules) - 1
    assert [p for p in after.problems if "max_mark_points" in p] == [
        f"reader 0 nodule {before.nodules[0].nodule_id!r}: contour points: declares "
        f"{sum(len(r.points) for r in before.nodules[0].rois) + 500} (mark_points) over the "
        "limit of 400; raise limits.max_mark_points in params.yaml if this input is genuine; "
        "mark not used"]
    _, _, report = lesions.build_tables(raw, PrepareParams(), "h")
    rows = [(p, r) for p, r in report.part_rejects if "max_mark_points" in r]
    assert len(rows) == 1 and rows[0][0].endswith(".xml")
    assert rows[0][1].startswith("mark not used: reader 0 nodule")
