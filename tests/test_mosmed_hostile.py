"""Hostile and out-of-range MosMed input: NIfTI headers, registries, junk volumes.

Every file here declares something it cannot be (an offset outside the file, sizes that
overflow, codes no writer uses, non-finite geometry) or is readable but no CT study; each must
end as a named reject or refusal, never as a crash, a hang, a huge allocation or a volume made
of memory outside the file.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from serve_project import random_model

from oncopipe import cli, datasets
from oncopipe.core import limits
from oncopipe.core.errors import DecodeError, LimitError, NotDatasetInputError, RejectError
from oncopipe.datasets.mosmed import demo, plausible, xlsx
from oncopipe.datasets.mosmed import prepare as mosmed_prepare
from oncopipe.datasets.mosmed.params import DemoParams
from oncopipe.datasets.mosmed.registry import find_studies
from oncopipe.datasets.mosmed.volume import VolumeError, read_nifti
from oncopipe.ingest import input_warnings
from oncopipe.ingest.rawfiles import RawLayoutError, read_csv
from oncopipe.ingest.report import Report

ROOT = Path(__file__).resolve().parents[1]
XLSX = ROOT / "tests" / "data" / "mosmed_registry.xlsx"
AFFINE = np.diag([-2.0, 2.0, 5.0, 1.0])


def nifti(kind: type = nib.Nifti1Image, shape=(16, 16, 6), **fields) -> bytes:
    """A small valid single-file NIfTI (air with a block of tissue), header fields set."""
    data = np.full(shape, -1000, np.int16)
    data[4:12, 4:12] = 40
    img = kind(data, AFFINE)
    img.set_qform(AFFINE, code=1)
    img.set_sform(AFFINE, code=1)
    raw = bytearray(img.to_bytes())
    header = np.ndarray((), kind.header_class.template_dtype, buffer=raw)
    for name, value in fields.items():
        header[name] = value
    return bytes(raw)


def write(tmp_path: Path, data: bytes, name: str = "study.nii") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def refused(path: Path, error: type = VolumeError) -> str:
    with pytest.raises(error) as info:
        read_nifti(path)
    assert str(info.value).startswith(f"{path}: "), info.value
    return str(info.value)


# ---------------------------------------------------------------------- NIfTI header first


def test_nifti2_with_a_huge_negative_offset_is_rejected_not_a_segfault(tmp_path):
    path = write(tmp_path, nifti(nib.Nifti2Image, vox_offset=-100_000_000))
    code = (f"from oncopipe.datasets.mosmed.volume import read_nifti\n"
            f"read_nifti({str(path)!r})")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert run.returncode == 1, f"killed by signal {-run.returncode}" if run.returncode < 0 \
        else run.stderr
    assert "VolumeError" in run.stderr and "vox_offset -100000000" in run.stderr


@pytest.mark.parametrize("kind", [nib.Nifti1Image, nib.Nifti2Image])
def test_a_negative_offset_is_not_read_as_memory_outside_the_file(tmp_path, kind):
    assert "vox_offset -600" in refused(write(tmp_path, nifti(kind, vox_offset=-600)))


@pytest.mark.parametrize("offset, words", [
    (float("nan"), "vox_offset nan is not a byte offset"),
    (float("inf"), "vox_offset inf is not a byte offset"),
    (352.5, "vox_offset 352.5 is not a byte offset"),
    (100.0, "vox_offset 100 lies inside the 348-byte header"),
    (1e12, "truncated voxel data"),
])
def test_offsets_that_point_nowhere_in_the_file(tmp_path, offset, words):
    assert words in refused(write(tmp_path, nifti(vox_offset=offset)))


@pytest.mark.parametrize("dim, words", [
    ([3, 16, 16, -6, 1, 1, 1, 1], "dim[3] = -6 is not a positive size"),
    ([3, 16, 0, 6, 1, 1, 1, 1], "dim[2] = 0 is not a positive size"),
    ([9, 16, 16, 6, 1, 1, 1, 1], "dim[0] = 9 is not a number of dimensions"),
    ([2, 16, 16, 6, 1, 1, 1, 1], "expected a 3D volume, got shape (16, 16)"),
])
def test_dims_that_are_no_volume(tmp_path, dim, words):
    assert words in refused(write(tmp_path, nifti(dim=dim)))


def test_dims_whose_product_overflows_int64_are_a_limit_not_a_wraparound(tmp_path):
    dim = [3, 2**32, 2**32, 2, 1, 1, 1, 1]  # np.prod wraps to 0: "no bytes needed"
    assert np.prod(np.array(dim[1:4], np.int64)) == 0
    text = refused(write(tmp_path, nifti(nib.Nifti2Image, dim=dim)), LimitError)
    assert "(voxels) over the limit" in text


def test_voxels_and_inflated_bytes_over_the_active_limits(tmp_path, monkeypatch):
    path = write(tmp_path, gzip.compress(nifti(), mtime=0), "study.nii.gz")
    monkeypatch.setenv("ONCOPIPE_LIMITS", json.dumps({"max_voxels": 1000}))
    assert "declares 1,536 (voxels) over the limit of 1,000" in refused(path, LimitError)
    monkeypatch.setenv("ONCOPIPE_LIMITS", json.dumps({"max_inflated_bytes": 2000}))
    assert "(inflated_bytes) over the limit of 2,000" in refused(path, LimitError)
    monkeypatch.delenv("ONCOPIPE_LIMITS")
    # trailing bytes after the voxels still count against the cap while the rest inflates
    padded = write(tmp_path, gzip.compress(nifti() + bytes(1 << 20), mtime=0), "pad.nii.gz")
    monkeypatch.setenv("ONCOPIPE_LIMITS", json.dumps({"max_inflated_bytes": 1 << 19}))
    assert "(inflated_bytes) over the limit" in refused(padded, LimitError)


def test_a_small_gzip_declaring_gigabytes_is_refused_before_allocating(tmp_path):
    dim = [3, 512, 512, 1000, 1, 1, 1, 1]  # 0.5 GiB of int16 from a file of a few hundred bytes
    path = write(tmp_path, gzip.compress(nifti(dim=dim), mtime=0), "bomb.nii.gz")
    assert "more than a" in refused(path) and "gzip file can hold" in refused(path)


@pytest.mark.parametrize("fields, words", [
    ({"datatype": 12345}, "unknown NIfTI datatype code 12345"),
    ({"datatype": 32}, "voxel type complex64 is not a real-valued CT intensity"),
    ({"scl_slope": np.inf}, "non-finite scaling"),
    ({"scl_slope": 1.0, "scl_inter": np.nan}, "non-finite scaling"),
    ({"quatern_c": np.nan}, "non-finite quaternion"),
    ({"quatern_b": 0.9, "quatern_c": 0.9}, "is not a rotation"),
    ({"pixdim": [1, 2, np.inf, 5, 1, 1, 1, 1]}, "non-finite pixdim"),
    ({"pixdim": [1, 2, -2, 5, 1, 1, 1, 1]}, "negative pixdim"),
    ({"srow_y": [np.nan, 0, 0, 0]}, "non-finite sform"),
    ({"srow_x": [-2.0, -2.0, 0, 0], "srow_y": [2.0, 2.0001, 0, 0]},
     "axes are (nearly) in one plane"),
    ({"sform_code": 0, "qform_code": 0, "pixdim": [1, 2, 0, 5, 1, 1, 1, 1]}, "voxel sides"),
    ({"magic": b"ni1"}, "not a single-file NIfTI"),
])
def test_header_fields_no_volume_can_have(tmp_path, fields, words):
    assert words in refused(write(tmp_path, nifti(**fields)))


def test_qform_and_sform_that_disagree_are_rejected_not_mirrored(tmp_path):
    data = nifti(srow_x=[2.0, 0, 0, 0])  # sform: x towards R; the qform says L
    text = refused(write(tmp_path, data))
    assert "qform (LAS) and sform (RAS) disagree on the orientation" in text


def test_a_gzip_in_two_members_is_read_whole(tmp_path):
    raw = nifti()
    one = write(tmp_path, gzip.compress(raw, mtime=0), "one.nii.gz")
    half = len(raw) // 2
    two = write(tmp_path, gzip.compress(raw[:half], mtime=0) + gzip.compress(raw[half:], mtime=0),
                "two.nii.gz")
    np.testing.assert_array_equal(read_nifti(two)[0], read_nifti(one)[0])


def test_extensions_before_the_voxels_are_skipped(tmp_path):
    img = nib.load(write(tmp_path, nifti()))
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"a comment" * 20))
    nib.save(img, tmp_path / "ext.nii")
    voxels, _ = read_nifti(tmp_path / "ext.nii")
    np.testing.assert_array_equal(voxels, np.asanyarray(nib.load(tmp_path / "ext.nii").dataobj))


def test_corrupt_or_truncated_gzip_is_a_reject_naming_the_file(tmp_path):
    good = gzip.compress(nifti(), mtime=0)
    bad = bytearray(good)
    bad[40:60] = b"\xff" * 20  # inside the deflate stream
    assert "corrupt gzip stream" in refused(write(tmp_path, bytes(bad), "bad.nii.gz"),
                                            RejectError)
    with pytest.raises(DecodeError, match="corrupt gzip stream"):
        crc = bytearray(good)
        crc[-8] ^= 0xFF  # the CRC of the last member
        read_nifti(write(tmp_path, bytes(crc), "crc.nii.gz"))
    cut = write(tmp_path, good[: len(good) - 20], "cut.nii.gz")
    assert "corrupt gzip stream" in refused(cut)
    plain = write(tmp_path, nifti()[:-100])
    assert "truncated voxel data" in refused(plain)


# ---------------------------------------------------------------------------- registries


def _xlsx_with(path: Path, sheet_xml: str, method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(XLSX) as src, zipfile.ZipFile(path, "w", method) as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                body = sheet_xml.encode()
            dst.writestr(info.filename, body)
    return path


SHEET = ('<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
         '<sheetData>{}</sheetData></worksheet>')


@pytest.mark.parametrize("rows, words", [
    ('<row r="1"><c r="ZZZZZZ1" t="inlineStr"><is><t>x</t></is></c></row>',
     "cell reference 'ZZZZZZ1' is not a cell like C7"),
    ('<row r="1"><c r="XFE1" t="inlineStr"><is><t>x</t></is></c></row>',
     "(xlsx_column) over the limit"),
    ('<row r="99999999"><c t="inlineStr"><is><t>x</t></is></c></row>',
     "row reference '99999999' is not a row number"),
    ('<row r="1048577"><c t="inlineStr"><is><t>x</t></is></c></row>',
     "(xlsx_row) over the limit"),
    ('<row r="x"><c t="inlineStr"><is><t>x</t></is></c></row>',
     "row reference 'x' is not a row number"),
    ('<row r="1"><c r="A1" t="s"><v>-1</v></c></row>', "cell A1 unreadable"),
])
def test_xlsx_references_that_would_hang_or_misread(tmp_path, rows, words):
    path = _xlsx_with(tmp_path / "reg.xlsx", SHEET.format(rows))
    with pytest.raises(xlsx.XlsxError) as info:
        xlsx.read_first_sheet(path)
    assert str(info.value).startswith(f"{path}") and words in str(info.value)


def test_xlsx_cells_spanning_more_than_the_limit(tmp_path, monkeypatch):
    rows = '<row r="1"><c r="A1"><v>1</v></c></row><row r="5000"><c r="J5000"><v>2</v></c></row>'
    path = _xlsx_with(tmp_path / "reg.xlsx", SHEET.format(rows))
    assert len(xlsx.read_first_sheet(path)) == 5000
    monkeypatch.setenv("ONCOPIPE_LIMITS", json.dumps({"max_xlsx_cells": 1000}))
    with pytest.raises(xlsx.XlsxError, match=r"reg\.xlsx: rows and cells the sheet spans"):
        xlsx.read_first_sheet(path)


def test_xlsx_members_over_the_limit_or_unsupported_are_xlsx_errors(tmp_path, monkeypatch):
    path = _xlsx_with(tmp_path / "reg.xlsx", SHEET.format("<row/>" * 3000))
    monkeypatch.setenv("ONCOPIPE_LIMITS", json.dumps({"max_inflated_bytes": 10_000}))
    with pytest.raises(xlsx.XlsxError, match=r"reg\.xlsx: xl/worksheets/sheet1\.xml: declares"):
        xlsx.read_first_sheet(path)
    monkeypatch.delenv("ONCOPIPE_LIMITS")
    blob = bytearray(XLSX.read_bytes())
    entry = blob.find(b"PK\x01\x02")  # the central directory: what zipfile trusts
    while blob[entry + 46:entry + 46 + 15] != b"xl/workbook.xml":
        entry = blob.find(b"PK\x01\x02", entry + 4)
    blob[entry + 10:entry + 12] = (99).to_bytes(2, "little")  # AES: no reader here knows it
    odd = tmp_path / "odd.xlsx"
    odd.write_bytes(bytes(blob))
    with pytest.raises(xlsx.XlsxError, match=r"odd\.xlsx"):
        xlsx.read_first_sheet(odd)


def test_a_registry_xlsx_limit_stops_prepare_with_one_line(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    _xlsx_with(raw / "dataset_registry.xlsx", SHEET.format('<row r="1"><c r="AAAA1"/></row>'))
    with pytest.raises(RawLayoutError, match=r"dataset_registry\.xlsx: cell reference 'AAAA1'"):
        find_studies(raw, Report("prepare[mosmed]"))


def test_csv_with_a_bom_reports_the_bad_byte_where_it_is(tmp_path):
    plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
    body = "id,label\ncaf\u00e9,0\n".encode("cp1252")
    plain.write_bytes(body)
    bom.write_bytes(b"\xef\xbb\xbf" + body)
    for path in (plain, bom):
        with pytest.raises(RawLayoutError, match=r"byte 0xe9 at line 2, column 4\)"):
            read_csv(path)
    first = tmp_path / "first.csv"
    first.write_bytes(b"\xef\xbb\xbfi\xe9d,label\n")
    with pytest.raises(RawLayoutError, match=r"at line 1, column 5\)"):  # the BOM's 3 bytes
        read_csv(first)


def test_a_column_named_twice_is_an_error_not_last_one_wins(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("image_name,target,patient_id,target\nISIC_1,1,p1,0\n")
    with pytest.raises(RawLayoutError, match=r"train\.csv: column 'target' appears 2 times"):
        read_csv(path)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "dataset_registry.csv").write_text(
        "study_id,category,study_file,category\n1,CT-0,/studies/CT-0/study_0001.nii.gz,CT-4\n")
    with pytest.raises(RawLayoutError, match=r"dataset_registry\.csv: column 'category'"):
        find_studies(raw, Report("prepare[mosmed]"))


# ------------------------------------------------------------------ junk refused by predict


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """params.yaml (MosMed at a small prepared shape), a random model, one demo study."""
    root = tmp_path_factory.mktemp("junk")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["mosmed"]["prepare"]["shape"] = [16, 32, 32]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cfg = datasets.load_config("mosmed", root / "params.yaml")
    random_model(root / "models" / "mosmed", cfg, (1, 16, 32, 32))
    hu, _, affine = demo.phantom(DemoParams(size=32, slices=(20, 20)), "CT-0", 1)
    return root, cfg, hu, affine


def _study(root: Path, hu: np.ndarray, affine: np.ndarray, name: str) -> Path:
    path = root / f"{name}.nii.gz"
    demo.write_nifti(path, hu, affine)
    return path


@pytest.mark.parametrize("name, change, words", [
    ("blank", lambda hu: np.zeros_like(hu), "blank volume (every voxel is 0)"),
    ("negative", lambda hu: np.minimum(hu, -10), "no voxel above -10"),
    ("normalised", lambda hu: ((hu + 1024) // 16).astype(np.int16), "no air"),
    ("beyond", lambda hu: hu.astype(np.float32) * 1e4, "beyond any CT scale"),
    ("thin", lambda hu: hu[:, :, :4], "4 slices of 32 x 32 pixels is far smaller"),
    ("thumbnail", lambda hu: hu[:8, :8], "8 x 8 pixels is far smaller"),
])
def test_junk_volumes_are_refused_in_one_sentence(project, capsys, name, change, words):
    root, cfg, hu, affine = project
    path = _study(root, change(hu), affine, name)
    with pytest.raises(NotDatasetInputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        mosmed_prepare.preprocess_one(cfg, path)
    argv = ["predict", "mosmed", str(path), "--model", str(root / "models" / "mosmed"), "--params",
            str(root / "params.yaml")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err


def test_unusual_geometry_is_answered_with_a_warning(project, capsys):
    root, cfg, hu, affine = project
    usual = _study(root, hu, affine, "usual")
    odd = affine.copy()
    odd[2, 2] = 0.3  # slices 0.3 mm apart
    unusual = _study(root, hu, odd, "unusual")
    argv = ["predict", "mosmed", "--model", str(root / "models" / "mosmed"), "--params",
            str(root / "params.yaml")]
    assert cli.main([*argv[:2], str(usual), *argv[2:], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == []
    assert cli.main([*argv[:2], str(unusual), *argv[2:], "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["warnings"] == ["slices 0.3 mm apart; MosMedData's are 8 mm apart, so the "
                                  "model sees this study resampled to another depth than in "
                                  "training"]
    assert cli.main([*argv[:2], str(unusual), *argv[2:]]) == 0
    assert "warning: slices 0.3 mm apart" in capsys.readouterr().out
    with input_warnings.collecting() as notes:
        mosmed_prepare.preprocess_one(cfg, usual)
    assert notes == []


def test_serve_refuses_junk_and_shows_the_warnings(project):
    from fastapi.testclient import TestClient

    from oncopipe.serve.app import Settings, create_app

    root, _, hu, affine = project
    blank = _study(root, np.zeros_like(hu), affine, "blank")
    odd = affine.copy()
    odd[2, 2] = 0.3
    unusual = _study(root, hu, odd, "unusual")
    with TestClient(create_app(Settings(root=root)), base_url="http://127.0.0.1") as client:
        def post(route: str, path: Path):
            return client.post(route, files={"file": (path.name, path.read_bytes())})

        response = post("/api/predict/mosmed", blank)
        assert response.status_code == 422
        assert response.json()["error"] == ("blank.nii.gz: blank volume (every voxel is 0), "
                                             "not a CT study")
        response = post("/api/predict/mosmed", unusual)
        assert response.status_code == 200
        assert response.json()["warnings"][0].startswith("slices 0.3 mm apart")
        response = post("/api/explain/mosmed", unusual)
        assert response.json()["result"]["warnings"][0].startswith("slices 0.3 mm apart")
        assert post("/api/predict/mosmed", _study(root, hu, affine, "u")).json()["warnings"] == []


def test_the_minimum_size_is_the_release_or_the_model_input_whichever_is_smaller():
    assert plausible.MIN_SLICES == 16 and plausible.MIN_SIDE_PX == 128
    vol = dataclasses.make_dataclass("V", ["hu", "spacing"])(
        np.full((20, 100, 100), -1000, np.int16), (8.0, 3.0, 3.0))
    vol.hu[:, 40:60, 40:60] = 40
    plausible.check("v.nii", vol, (16, 64, 64))  # a 64-pixel model takes 100 pixels
    with pytest.raises(NotDatasetInputError, match="at least 16 slices of 128 x 128"):
        plausible.check("v.nii", vol, (64, 128, 128))


def test_limits_default_is_restored():
    assert limits.active() == limits.DEFAULT
