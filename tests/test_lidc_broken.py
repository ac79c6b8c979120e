"""Broken and odd LIDC input through both stages (lidc_lesions, then prepare_lidc).

Each case plants one problem into a copy of a small demo (two patients: the classic UID layout
and the old descriptive one) and runs the real stage functions on it. Whatever the problem,
no exception escapes, every raw file is accounted for exactly once (kept + rejected = read,
in both stages) and the problem is a recorded row naming the file with the reason; the
series and lesions the problem does not touch come out unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from oncopipe.core.config import DatasetConfig, EvaluateParams, ShardParams, TrainParams
from oncopipe.datasets.lidc import lesions
from oncopipe.datasets.lidc import prepare as lidc
from oncopipe.datasets.lidc.demo import write as write_demo
from oncopipe.datasets.lidc.params import CohortParams, DemoParams, PrepareParams
from oncopipe.datasets.lidc.series import SeriesError, read_slice_hu

SMALL = DemoParams(seed=5, n_patients=8, rows=64, pixel_spacing=3.0, n_slices=20,
                   nodules=(2, 3), small_nodules=(1, 2), non_nodules=(1, 2))
KEEP = ("LIDC-IDRI/LIDC-IDRI-0001", "LIDC-IDRI-0003")  # two series, two layouts


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    full = tmp_path_factory.mktemp("full")
    write_demo(SMALL, full)
    raw = tmp_path_factory.mktemp("subset") / "raw"
    for part in KEEP:
        shutil.copytree(full / part, raw / part)
    return raw


@pytest.fixture(scope="module")
def clean(demo, tmp_path_factory):
    return _run(demo, tmp_path_factory.mktemp("clean"))


@dataclasses.dataclass
class Run:
    table: object  # polars DataFrame
    report: lesions.Report
    manifest: list[dict]
    prep_report: dict
    prep_rejects: list[dict]
    crops_2d: np.ndarray


def _run(raw: Path, work: Path, cohort: CohortParams | None = None) -> Run:
    params = PrepareParams(workers=1, **({"cohort": cohort} if cohort else {}))
    table, slices, report = lesions.build_tables(raw, params, "h")
    assert report.n_kept + len(report.rejects) == report.n_read
    paths = [p for p, _ in report.rejects]
    assert len(paths) == len(set(paths)), "a file rejected twice"
    assert table["lesion_id"].is_unique().all()
    pq.write_table(table.to_arrow(), work / "lesions.parquet")
    pq.write_table(slices.to_arrow(), work / "lesions_slices.parquet")
    cfg = DatasetConfig(name="lidc", seed=0, raw=raw, task="nodule_type", profile="demo",
                        demo=SMALL, prepare=params, shard=ShardParams(), train=TrainParams(),
                        evaluate=EvaluateParams())
    out = work / "prepared"
    out.mkdir()
    lidc.crop_table(cfg, out, work / "lesions.parquet")
    prep_report = json.loads((out / "report.json").read_text())
    assert prep_report["read"] == prep_report["kept"] + prep_report["rejected"] == len(table)
    return Run(table, report, pq.read_table(out / "manifest.parquet").to_pylist(), prep_report,
               pq.read_table(out / "rejects.parquet").to_pylist(),
               np.load(out / "crops_2d.npy"))


def _series(raw: Path, n: int = 0) -> Path:
    """Folder of the n-th series (0: patient 1, classic layout)."""
    return sorted({p.parent for p in raw.rglob("*.dcm")})[n]


def _slices(folder: Path) -> list[Path]:
    """The folder's slices in z order."""
    return sorted(folder.glob("*.dcm"), key=lambda p: float(
        pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))


def _edit(path: Path, fn: Callable[[pydicom.Dataset], None]) -> None:
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(path)


def _rel(raw: Path, path: Path) -> str:
    return path.relative_to(raw).as_posix()


# Each case: mutate the copy and return what must be recorded, as
# ("file" | "series" | "part", raw-relative path, reason substring).


def zero_byte(raw):
    f = _slices(_series(raw))[5]
    f.write_bytes(b"")
    return "file", f, "unreadable DICOM"


def truncated_pixels(raw):
    f = _slices(_series(raw))[10]
    f.write_bytes(f.read_bytes()[:-3000])
    return "file", f, "bad pixel data: cannot decode pixel data (Explicit VR Little Endian"


def wrong_modality(raw):
    f = _slices(_series(raw))[3]
    _edit(f, lambda ds: setattr(ds, "Modality", "MR"))
    return "file", f, "not CT: Modality MR"


def missing_pixel_spacing(raw):
    f = _slices(_series(raw))[4]
    _edit(f, lambda ds: delattr(ds, "PixelSpacing"))
    return "file", f, "bad header: PixelSpacing missing"


def missing_position(raw):
    f = _slices(_series(raw))[4]
    _edit(f, lambda ds: delattr(ds, "ImagePositionPatient"))
    return "file", f, "bad header: ImagePositionPatient missing"


def _patch(path: Path, tag: bytes, vr: bytes, value: bytes) -> None:
    """Rewrite one explicit-VR element's value in the file bytes (pydicom will not write an
    invalid one)."""
    data = path.read_bytes()
    at = data.index(tag + vr)
    old = int.from_bytes(data[at + 6:at + 8], "little")
    path.write_bytes(data[:at + 6] + len(value).to_bytes(2, "little") + value
                     + data[at + 8 + old:])


def instance_number_abc(raw):
    f = _slices(_series(raw))[6]
    _patch(f, b"\x20\x00\x13\x00", b"IS", b"abc ")
    return "file", f, "bad header: InstanceNumber 'abc' is not a finite number"


def position_z_nan(raw):
    f = _slices(_series(raw))[7]

    def nan_z(ds):
        x, y, _ = ds.ImagePositionPatient
        ds.ImagePositionPatient = [x, y, "NaN"]
    _edit(f, nan_z)
    return "file", f, "bad header: ImagePositionPatient"


def pixel_spacing_zero(raw):
    f = _slices(_series(raw))[8]
    _edit(f, lambda ds: setattr(ds, "PixelSpacing", [0, 0]))
    return "file", f, "bad header: PixelSpacing [0.0, 0.0] is not 2 finite numbers > 0"


def slope_without_intercept(raw):
    f = _slices(_series(raw))[9]
    _edit(f, lambda ds: delattr(ds, "RescaleIntercept"))
    return "file", f, "RescaleSlope and RescaleIntercept must come together"


def empty_rescale_intercept(raw):
    """Present but empty: the raw read would take it as 0, pydicom cannot apply it."""
    f = _slices(_series(raw))[9]
    _edit(f, lambda ds: setattr(ds, "RescaleIntercept", ""))
    return "file", f, "bad header: RescaleIntercept (empty) is not a finite number"


def duplicate_slice(raw):
    f = _slices(_series(raw))[12]
    copy = f.with_name("zz_copy.dcm")
    shutil.copy(f, copy)
    return "file", copy, f"duplicate z: {pydicom.dcmread(f).ImagePositionPatient[2]:g} mm"


def missing_slice_luna(raw):
    folder = _series(raw)
    _slices(folder)[10].unlink()
    return "series", _slices(folder)[0], "cohort: series 1 missing slice(s)"


def malformed_xml(raw):
    xml = next(_series(raw).glob("*.xml"))
    xml.write_text(xml.read_text()[:500])
    return "file", xml, "unusable XML"


def tilted_gantry(raw):
    for k, f in enumerate(_slices(_series(raw))):
        def tilt(ds, k=k):
            x, y, z = ds.ImagePositionPatient
            ds.ImagePositionPatient = [x, float(y) + 0.7 * k, z]  # ~15 degrees at 2.5 mm
        _edit(f, tilt)
    return "series", _slices(_series(raw))[0], "x/y changes along z (gantry tilt or shear)"


def non_axial(raw):
    f = _slices(_series(raw))[2]
    _edit(f, lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 0.927, -0.375]))
    return "series", _slices(_series(raw))[0], "non-axial ImageOrientationPatient"


def other_matrix(raw):
    f = _slices(_series(raw))[2]

    def shrink(ds):
        ds.PixelData = ds.pixel_array[:32, :32].tobytes()
        ds.Rows = ds.Columns = 32
    _edit(f, shrink)
    return "series", _slices(_series(raw))[0], "Rows/Columns/PixelSpacing differ"


def marks_outside_image(raw):
    xml = next(_series(raw).glob("*.xml"))
    text = xml.read_text()
    start = text.index("<xCoord>")
    end = text.index("</roi>", start)  # every point of the first roi, shifted 1000 px
    block = text[start:end]
    shifted = []
    for part in block.split("<xCoord>")[1:]:
        value, rest = part.split("</xCoord>", 1)
        shifted.append(f"<xCoord>{int(value) + 1000}</xCoord>{rest}")
    xml.write_text(text[:start] + "".join(shifted) + text[end:])
    return "part", xml, "roi not placed"


def same_series_twice(raw):
    folder = _series(raw)
    copy = raw / "second-download" / folder.name
    shutil.copytree(folder, copy)
    return "file", sorted(copy.glob("*.dcm"))[0], "duplicate series: SeriesInstanceUID also in"


def symlink_loop(raw):
    link = _series(raw) / "loop"
    link.symlink_to("..", target_is_directory=True)
    return "file", link, "symlink loop"


def dangling_symlink(raw):
    link = _series(raw) / "gone.dcm"
    link.symlink_to("nowhere.dcm")
    return "file", link, "broken symlink"


def self_symlink(raw):
    link = _series(raw) / "self.dcm"
    link.symlink_to("self.dcm")
    return "file", link, "symlink loop"


def undecodable_jpeg2000(raw):
    f = _slices(_series(raw))[9]

    def corrupt(ds):
        ds.compress(JPEG2000Lossless)
        ds.PixelData = ds.PixelData[:40] + b"\0" * (len(ds.PixelData) - 40)
    _edit(f, corrupt)
    return "file", f, ("bad pixel data: cannot decode pixel data (JPEG 2000 Image Compression "
                       "(Lossless Only)")


CASES = [zero_byte, truncated_pixels, wrong_modality, missing_pixel_spacing, missing_position,
         instance_number_abc, position_z_nan, pixel_spacing_zero, slope_without_intercept,
         empty_rescale_intercept, duplicate_slice, missing_slice_luna, malformed_xml,
         tilted_gantry, non_axial, other_matrix, marks_outside_image, same_series_twice,
         symlink_loop, dangling_symlink, self_symlink, undecodable_jpeg2000]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_broken_input(case, demo, clean, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(demo, raw, symlinks=True)
    where, path, reason = case(raw)
    rel = _rel(raw, path)
    luna = CohortParams(reject_missing_slices=True) if case is missing_slice_luna else None
    run = _run(raw, tmp_path, luna)
    victim = _rel(raw, _series(raw))
    if where == "file":
        mine = [r for p, r in run.report.rejects if p == rel]
        assert len(mine) == 1 and reason in mine[0], mine
    elif where == "series":  # every file of the series has its row
        rows = {p: r for p, r in run.report.rejects if p.startswith(victim + "/")}
        slices = [p for p in (raw / victim).glob("*.dcm")]
        assert len(rows) >= len(slices) and reason in rows[rel], rows.get(rel)
        assert victim not in set(run.table["series_dir"])
    else:
        assert where == "part"
        assert any(p.startswith(rel + "#") and reason in r for p, r in run.report.part_rejects)
    # prepare agrees with the lesion stage: every slice it was handed can be read
    assert not [r for r in run.prep_rejects if "unreadable" in r["reason"]], run.prep_rejects
    # the other series is untouched
    other = _rel(raw, _series(raw, 1))
    mine = [m for m in run.manifest if m["source"].startswith(other + ";")]
    ref = [m for m in clean.manifest if m["source"].startswith(other + ";")]
    assert [m["sample_id"] for m in mine] == [m["sample_id"] for m in ref]
    assert np.array_equal(run.crops_2d[[m["array_index"] for m in mine]],
                          clean.crops_2d[[m["array_index"] for m in ref]])


def test_marks_outside_the_image_give_no_crop_of_air(demo, clean, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(demo, raw)
    marks_outside_image(raw)
    run = _run(raw, tmp_path)
    extent = 64 * 3.0
    for row in run.table.iter_rows(named=True):  # every lesion centre inside its scan
        assert 0 <= row["vox_i"] <= 63 and 0 <= row["vox_j"] <= 63, row["lesion_id"]
    assert run.prep_report["samples"] <= clean.prep_report["samples"]
    assert extent > 0


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "j2k"])
def test_compressed_series_gives_the_same_crops(demo, clean, tmp_path, syntax):
    """A series re-encoded losslessly is read to the same HU: same table, same crops."""
    raw = tmp_path / "raw"
    shutil.copytree(demo, raw)
    for f in _series(raw).glob("*.dcm"):
        _edit(f, lambda ds: ds.compress(syntax))
    assert pydicom.dcmread(next(_series(raw).glob("*.dcm"))).file_meta.TransferSyntaxUID == (
        syntax)
    run = _run(raw, tmp_path)
    assert run.table.equals(clean.table)
    assert run.manifest == clean.manifest
    assert np.array_equal(run.crops_2d, clean.crops_2d)


def test_greyscale_jpeg_baseline_slice(demo, tmp_path):
    """8-bit JPEG Baseline (a greyscale one: the corpus has only colour) equals its decode by
    pydicom + pylibjpeg through the Modality LUT, and Pillow's within 1 grey level."""
    from io import BytesIO

    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    f = _slices(_series(demo))[10]
    ds = pydicom.dcmread(f)
    grey = np.clip((ds.pixel_array.astype(np.int32) + 1024) // 8, 0, 255).astype(np.uint8)
    buf = BytesIO()
    Image.fromarray(grey).save(buf, format="JPEG", quality=90)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.RescaleSlope, ds.RescaleIntercept = 8, -1024
    del ds.PixelPaddingValue
    out = tmp_path / "baseline.dcm"
    ds.save_as(out)
    hu = read_slice_hu(out)
    back = pydicom.dcmread(out)
    ref = apply_modality_lut(get_decoder(JPEGBaseline8Bit).as_array(
        back, decoding_plugin="pylibjpeg")[0], back).astype(np.float32)
    np.testing.assert_array_equal(hu, ref)
    pil = np.asarray(Image.open(BytesIO(buf.getvalue()))).astype(np.float32) * 8 - 1024
    assert np.abs(hu - pil).max() <= 8  # one grey level = 8 HU here
    assert np.abs(hu - (grey.astype(np.float32) * 8 - 1024)).mean() < 3 * 8  # lossy, close


def test_undecodable_file_is_a_series_error_naming_file_and_syntax(demo, tmp_path):
    f = tmp_path / "x.dcm"
    shutil.copy(_slices(_series(demo))[0], f)

    def mislabel(ds):  # RLE data under a JPEG-LS transfer syntax
        ds.compress(RLELossless)
        ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    _edit(f, mislabel)
    syntax = r"JPEG-LS Lossless Image Compression \(1\.2\.840\.10008\.1\.2\.4\.80\)"
    with pytest.raises(SeriesError, match=rf"x\.dcm: cannot decode pixel data \({syntax}\)"):
        read_slice_hu(f)


PLANTED = {"PatientName": "Doe^Jane", "PatientBirthDate": "19700101",
           "InstitutionName": "St Elsewhere General", "AccessionNumber": "ACC998877",
           "PatientID": "MRN4455667"}


def test_no_raw_identifier_reaches_any_output_or_log(demo, tmp_path, caplog, monkeypatch):
    """A local copy with real identifiers and no LIDC-IDRI-NNNN folder: patient_id is a keyed
    hash, counted in the report, and none of the planted values appears anywhere."""
    monkeypatch.setenv(lesions.ID_KEY_ENV, "test-secret")
    raw = tmp_path / "raw"
    shutil.copytree(demo, raw)
    victim = _series(raw)
    moved = raw / "site_a" / "case_b"
    shutil.move(victim, moved)
    shutil.rmtree(raw / "LIDC-IDRI")
    for f in moved.glob("*.dcm"):
        _edit(f, lambda ds: [setattr(ds, k, v) for k, v in PLANTED.items()])
    caplog.set_level(logging.DEBUG)
    run = _run(raw, tmp_path)
    ids = set(run.table.filter(run.table["series_dir"] == "site_a/case_b")["patient_id"])
    assert len(ids) == 1 and next(iter(ids)).startswith("LIDC-H-")
    assert run.report.extra["patient_ids_hashed"] == 1
    assert "ONCOPIPE_ID_KEY" in run.report.extra["patient_id_rule"]
    run.report.write(tmp_path, prefix="lesions_")
    blobs = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()
             and "raw" not in p.relative_to(tmp_path).parts]
    blobs.append(caplog.text.encode())
    blobs.append(json.dumps(run.manifest, default=str).encode())
    for value in PLANTED.values():
        for variant in {value, value.replace("^", " "), value.split("^")[0]}:
            assert not any(variant.encode() in b for b in blobs), variant
    # same key, same id; another key, another id
    again = lesions.build_tables(raw, PrepareParams(), "h")[0]
    assert set(again.filter(again["series_dir"] == "site_a/case_b")["patient_id"]) == ids
    monkeypatch.setenv(lesions.ID_KEY_ENV, "other-secret")
    other = lesions.build_tables(raw, PrepareParams(), "h")[0]
    assert set(other.filter(other["series_dir"] == "site_a/case_b")["patient_id"]) != ids


def test_origin_is_the_lowest_slice_whatever_the_file_order(demo, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(demo, raw)
    folder = _series(raw, 1)  # old descriptive layout: names not in z order
    first = _slices(folder)[0]
    assert sorted(folder.glob("*.dcm"))[0] != first

    def nudge(ds):  # within the x/y tolerance (0.05 px), but a different origin
        x, y, z = ds.ImagePositionPatient
        ds.ImagePositionPatient = [float(x) + 0.1, float(y) - 0.1, z]
    _edit(first, nudge)
    header = lidc.load_series(folder)
    ipp = pydicom.dcmread(first, stop_before_pixels=True).ImagePositionPatient
    assert header.origin_xy == (float(ipp[0]), float(ipp[1]))
    assert os.path.samefile(header.slices[0].path, first)


def test_a_bad_slice_in_a_prediction_folder_is_an_error_naming_it(demo, tmp_path):
    """load_series (preprocess_one's reader) must not crop around a slice quietly dropped."""
    folder = tmp_path / "series"
    shutil.copytree(_series(demo), folder)
    bad = sorted(folder.glob("*.dcm"))[3]
    bad.write_bytes(b"")
    with pytest.raises(lidc.SeriesError, match=f"{bad.name}: unreadable DICOM"):
        lidc.load_series(folder)

