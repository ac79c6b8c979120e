"""MosMedData: demo layout and determinism, orientation, agreement with the Keras example,
registry quirks, rejections, and the prepare step's outputs (small demo, a few seconds)."""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import polars as pl
import pytest
import yaml

from oncopipe.core.config import (
    DatasetConfig,
    EvaluateParams,
    ParamsError,
    ShardParams,
    TrainParams,
)
from oncopipe.core.manifest import check_arrays, read_manifest
from oncopipe.core.settings import validate
from oncopipe.datasets import load_config
from oncopipe.datasets.mosmed import demo, volume
from oncopipe.datasets.mosmed import prepare as mosmed_prepare
from oncopipe.datasets.mosmed.params import DemoParams, PrepareParams
from oncopipe.datasets.mosmed.registry import find_studies
from oncopipe.ingest.report import Report

SMALL_DEMO = DemoParams(seed=7, studies=(4, 3, 2, 1, 1), masks=2, size=32, slices=(8, 10),
                             noise_hu=10.0)
SMALL_PREPARE = PrepareParams(shape=(8, 16, 16), workers=1)


def make_cfg(raw: Path, demo_params: DemoParams = SMALL_DEMO,
             prepare_params: PrepareParams = SMALL_PREPARE) -> DatasetConfig:
    return DatasetConfig(name="mosmed", seed=0, raw=raw, task="binary", profile="demo",
                         demo=demo_params, prepare=prepare_params, shard=ShardParams(),
                         train=TrainParams(), evaluate=EvaluateParams())


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mosmed") / "raw"
    out.mkdir()
    demo.write_demo(make_cfg(out), out)
    return out


@pytest.fixture()
def raw_copy(demo_dir, tmp_path) -> Path:
    dst = tmp_path / "raw"
    shutil.copytree(demo_dir, dst)
    return dst


def run_prepare(raw: Path, out: Path, prepare_params: PrepareParams = SMALL_PREPARE):
    out.mkdir(parents=True, exist_ok=True)
    mosmed_prepare.prepare(make_cfg(raw, prepare_params=prepare_params), out)
    df, meta = read_manifest(out / "manifest.parquet")
    rejects = pl.read_parquet(out / "rejects.parquet")
    report = json.loads((out / "report.json").read_text())
    return df, meta, rejects, report


# ---------------------------------------------------------------------------------- demo data


def test_demo_layout_matches_the_release(demo_dir):
    registry = (demo_dir / "dataset_registry.csv").read_bytes()
    assert registry.startswith(b"\xef\xbb\xbfstudy_id,category,study_file,mask_file\n")
    lines = registry.decode("utf-8-sig").splitlines()[1:]
    assert lines[0] == "1,CT-0,/studies/CT-0/study_0001.nii.gz,"
    assert "255,CT-1,/studies/CT-1/study_0255.nii.gz,/masks/study_0255_mask.nii.gz" in lines
    assert "1109,CT-4,/studies/CT-4/study_1109.nii.gz," in lines
    assert len(lines) == sum(SMALL_DEMO.studies)
    masks = sorted(p.name for p in (demo_dir / "masks").iterdir())
    assert masks == ["study_0255_mask.nii.gz", "study_0256_mask.nii.gz"]

    img = nib.load(demo_dir / "studies/CT-1/study_0255.nii.gz")
    assert img.get_data_dtype() == np.int16
    assert nib.aff2axcodes(img.affine) == ("L", "A", "S")
    assert img.header.get_zooms()[2] == pytest.approx(8.0)
    assert img.shape[:2] == (32, 32) and 8 <= img.shape[2] <= 10
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1


def test_demo_masks_mark_the_lesions(demo_dir):
    hu = np.asanyarray(nib.load(demo_dir / "studies/CT-1/study_0255.nii.gz").dataobj)
    mask = np.asanyarray(nib.load(demo_dir / "masks/study_0255_mask.nii.gz").dataobj)
    assert mask.dtype == np.int16 and set(np.unique(mask)) == {0, 1}
    lesion = mask.astype(bool)
    # ground glass / consolidation (> -700 HU) inside the mask, aerated lung around it
    assert np.median(hu[lesion]) > -700
    lung_like = (hu < -700) & (hu > -950)
    assert lung_like.sum() > lesion.sum()


def test_abnormal_demo_studies_have_more_involvement_by_category():
    fractions = []
    for category in ("CT-0", "CT-1", "CT-2", "CT-3"):
        _, lesion, _ = demo.phantom(SMALL_DEMO, category, 1000)
        fractions.append(lesion.mean())
    assert fractions[0] == 0
    assert fractions == sorted(fractions) and fractions[3] > 2 * fractions[1]


def test_demo_is_byte_identical_for_the_same_seed(demo_dir, tmp_path):
    again = tmp_path / "again"
    again.mkdir()
    demo.write_demo(make_cfg(again), again)
    files = sorted(p.relative_to(demo_dir) for p in demo_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (demo_dir / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = tmp_path / "other"
    other.mkdir()
    demo.write_demo(make_cfg(other, replace(SMALL_DEMO, seed=8)), other)
    rel = Path("studies/CT-0/study_0001.nii.gz")
    assert (other / rel).read_bytes() != (demo_dir / rel).read_bytes()


# -------------------------------------------------------------------------------- orientation


def _write(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    demo.write_nifti(path, np.ascontiguousarray(data), affine)
    return path


def _flip_axis(data: np.ndarray, affine: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The same physical image with voxel axis ``axis`` stored in the opposite order."""
    flipped = np.flip(data, axis)
    new = affine.copy()
    new[:3, 3] = affine[:3, :3] @ np.eye(3)[axis] * (data.shape[axis] - 1) + affine[:3, 3]
    new[:3, axis] = -affine[:3, axis]
    return flipped, new


def test_same_prepared_array_whatever_the_affine(demo_dir, tmp_path):
    src = demo_dir / "studies/CT-2/study_0939.nii.gz"
    img = nib.load(src)
    data, affine = np.asanyarray(img.dataobj), img.affine
    shape, window = (8, 16, 16), (-1000.0, 400.0)
    reference, _ = volume.prepare_volume(src, shape, window)

    ras = _write(tmp_path / "ras.nii.gz", *_flip_axis(data, affine, 0))  # x flipped: R, A, S
    assert nib.aff2axcodes(nib.load(ras).affine) == ("R", "A", "S")
    pis = _write(tmp_path / "lps_inferior.nii.gz",
                 *_flip_axis(*_flip_axis(data, affine, 1), 2))  # L, P, I
    swapped = _write(tmp_path / "yxz.nii.gz", data.transpose(1, 0, 2),
                     affine[:, [1, 0, 2, 3]])  # A, L, S: axes permuted
    for path in (ras, pis, swapped):
        arr, _ = volume.prepare_volume(path, shape, window)
        assert np.array_equal(arr, reference), path.name

    # the check can fail: ignoring the affine gives a mirrored array
    naive = _write(tmp_path / "naive.nii.gz", np.flip(data, 0), affine)
    assert not np.array_equal(volume.prepare_volume(naive, shape, window)[0], reference)


def test_canonical_orientation_is_radiological(demo_dir, tmp_path):
    arr, vol = volume.prepare_volume(demo_dir / "studies/CT-0/study_0002.nii.gz",
                                     (16, 32, 32), (-1000.0, 400.0), np.float32)
    assert vol.source_axcodes == ("L", "A", "S")
    # bone (> 190 HU) is the spine: posterior, i.e. the bottom rows, centred left-right
    rows, cols = np.nonzero(arr[0, 8] > 0.85)
    assert len(rows) > 0
    assert rows.mean() > 20 and abs(cols.mean() - 15.5) < 3

    # a marker in the patient's left, anterior, superior corner of an L, A, S volume
    data = np.full((8, 8, 4), -1000, np.int16)
    data[7, 7, 3] = 400  # x -> left, y -> anterior, z -> superior: the last voxel
    path = _write(tmp_path / "marker.nii.gz", data, demo.las_affine((1.0, 1.0, 8.0), (8, 8, 4)))
    marked = volume.prepare_volume(path, (4, 8, 8), (-1000.0, 400.0), np.float32)[0][0]
    # (D, H, W) = (inferior->superior, anterior->posterior, right->left)
    assert np.unravel_index(np.argmax(marked), marked.shape) == (3, 0, 7)


def test_scaled_and_uncompressed_files_give_the_same_array(demo_dir, tmp_path):
    src = demo_dir / "studies/CT-3/study_1064.nii.gz"
    img = nib.load(src)
    hu, affine = np.asanyarray(img.dataobj), img.affine
    shape, window = (8, 16, 16), (-1000.0, 400.0)
    reference, _ = volume.prepare_volume(src, shape, window)
    # stored as unsigned with scl_inter -1024, like many DICOM conversions
    stored = nib.Nifti1Image((hu.astype(np.int32) + 1024).astype(np.uint16), affine)
    stored.header.set_slope_inter(1.0, -1024.0)
    nib.save(stored, tmp_path / "scaled.nii")  # also: not gzipped
    arr, _ = volume.prepare_volume(tmp_path / "scaled.nii", shape, window)
    assert np.array_equal(arr, reference)


def test_truncated_voxel_data_is_an_error_naming_the_file(demo_dir, tmp_path):
    raw = gzip.decompress((demo_dir / "studies/CT-0/study_0001.nii.gz").read_bytes())
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(gzip.compress(raw[: len(raw) // 2], mtime=0))
    with pytest.raises(volume.VolumeError, match=r"cut\.nii\.gz: truncated voxel data"):
        volume.prepare_volume(path, (8, 16, 16), (-1000.0, 400.0))


# ------------------------------------------------------------------ agreement with the Keras way


def _keras_preprocess(path: Path, shape_dhw: tuple[int, int, int], corner_aligned: bool
                      ) -> np.ndarray:
    """The Keras example's read_nifti_file + normalize + resize_volume, shape parametrised."""
    from scipy import ndimage

    vol = nib.load(path).get_fdata()
    vol[vol < -1000] = -1000
    vol[vol > 400] = 400
    vol = ((vol + 1000) / 1400).astype("float32")
    depth, height, width = shape_dhw
    factors = (height / vol.shape[0], width / vol.shape[1], depth / vol.shape[-1])
    vol = ndimage.rotate(vol, 90, reshape=False)
    if corner_aligned:  # what the example does
        return ndimage.zoom(vol, factors, order=1)
    return ndimage.zoom(vol, factors, order=1, grid_mode=True, mode="nearest")


def test_agrees_with_the_keras_preprocessing(tmp_path):
    # a 128 x 128 study resampled to 64 x 64 in plane: downsampling, as with real 512 x 512
    params = replace(SMALL_DEMO, size=128, slices=(40, 40), noise_hu=15.0)
    hu, _, affine = demo.phantom(params, "CT-2", 940)
    path = _write(tmp_path / "study_0940.nii.gz", hu, affine)
    shape = (64, 64, 64)
    ours = volume.prepare_volume(path, shape, (-1000.0, 400.0), np.float32)[0][0]
    # for the release's L, A, S files the example's 90-degree rotation lands on our
    # orientation: its (rows, columns, slices) are our (H, W, D)
    exact = _keras_preprocess(path, shape, corner_aligned=False).transpose(2, 0, 1)
    assert np.abs(exact - ours).max() < 1e-5
    # the example's zoom aligns corner voxel centres instead of voxel edges: a sub-voxel
    # shift of the sampling grid; tolerance: mean |diff| < 0.01, correlation > 0.99
    literal = _keras_preprocess(path, shape, corner_aligned=True).transpose(2, 0, 1)
    assert np.abs(literal - ours).mean() < 0.01
    assert np.corrcoef(literal.ravel(), ours.ravel())[0, 1] > 0.99


# ------------------------------------------------------------------------------ prepare, registry


def test_prepare_writes_the_manifest_contract(demo_dir, tmp_path):
    df, meta, rejects, report = run_prepare(demo_dir, tmp_path / "out")
    assert meta.layout == "CDHW" and meta.class_names == ("normal", "abnormal")
    assert meta.patient_level and meta.normalisation["window_hu"] == [-1000.0, 400.0]
    check_arrays(df, meta, tmp_path / "out")
    arr = np.load(tmp_path / "out" / df["array_file"][0], mmap_mode="r")
    assert arr.shape == (11, 1, 8, 16, 16) and arr.dtype == np.float16
    assert float(arr.min()) >= 0.0 and float(arr.max()) <= 1.0
    assert df["patient_id"].to_list() == df["sample_id"].to_list()
    labels = dict(zip(df["category"], df["label"], strict=False))
    assert labels == {"CT-0": 0, "CT-1": 1, "CT-2": 1, "CT-3": 1, "CT-4": 1}
    assert df.filter(pl.col("mask_file") != "")["sample_id"].to_list() == [
        "study_0255", "study_0256"]
    assert len(rejects) == 0 and report["read"] == report["kept"] == 11
    assert (tmp_path / "out" / "contact_sheet.png").read_bytes()[:4] == b"\x89PNG"

    # preprocess_one gives the stored array; a second run gives byte-identical outputs
    row = df.filter(pl.col("sample_id") == "study_0939").row(0, named=True)
    one = mosmed_prepare.preprocess_one(make_cfg(demo_dir), demo_dir / row["source"])
    assert np.array_equal(one, arr[row["array_index"]])
    with pytest.raises(ValueError, match=r"study_0939\.nii\.gz: a point is not used"):
        mosmed_prepare.preprocess_one(make_cfg(demo_dir), demo_dir / row["source"], (0.0, 0.0, 0.0))
    run_prepare(demo_dir, tmp_path / "again", replace(SMALL_PREPARE, workers=2))
    for name in ("manifest.parquet", "volumes.npy", "report.json", "contact_sheet.png"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_folder_tree_without_registry_gives_the_same_studies(demo_dir, raw_copy, tmp_path):
    with_registry, *_ = run_prepare(demo_dir, tmp_path / "a")
    (raw_copy / "dataset_registry.csv").unlink()
    without, *_ = run_prepare(raw_copy, tmp_path / "b")
    cols = ["sample_id", "label", "category", "source", "mask_file"]
    assert without.select(cols).equals(with_registry.select(cols))


def test_registry_without_bom_and_with_crlf_is_read(demo_dir, raw_copy, tmp_path):
    registry = raw_copy / "dataset_registry.csv"
    text = registry.read_text(encoding="utf-8-sig")
    registry.write_bytes(text.replace("\n", "\r\n").encode("utf-8"))
    df, *_ = run_prepare(raw_copy, tmp_path / "out")
    assert len(df) == sum(SMALL_DEMO.studies)


def test_a_registry_row_is_named_by_its_line_in_the_file(tmp_path):
    """Blank lines are skipped but still counted: the rejection names the row's real line."""
    (tmp_path / "dataset_registry.csv").write_text(
        "study_id,category,study_file,mask_file\n\n\n7,CT-0,,\n")
    report = Report("t")
    assert find_studies(tmp_path, report) == []
    assert report.rejects == [("dataset_registry.csv:4", "registry row without study_file")]


def test_keras_subset_layout(demo_dir, tmp_path):
    raw = tmp_path / "keras"
    for category, folder in (("CT-0", "CT-0"), ("CT-2", "CT-23"), ("CT-3", "CT-23"),
                             ("CT-1", "CT-1")):
        for src in sorted((demo_dir / "studies" / category).glob("*.nii.gz")):
            dst = raw / "MosMedData" / folder / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    keras = replace(SMALL_PREPARE, abnormal=("CT-2", "CT-3", "CT-23"))
    df, _, rejects, report = run_prepare(raw, tmp_path / "out", keras)
    assert sorted(set(df["category"])) == ["CT-0", "CT-23"]
    assert df.filter(pl.col("category") == "CT-23")["label"].to_list() == [1] * 3
    assert df.filter(pl.col("category") == "CT-0")["label"].to_list() == [0] * 4
    assert df["source"][0] == "MosMedData/CT-0/study_0001.nii.gz"
    # CT-1 is in neither class with these params: rejected, not silently skipped
    assert sorted(rejects["path"]) == [f"MosMedData/CT-1/study_{i:04d}.nii.gz"
                                       for i in (255, 256, 257)]
    assert set(r.split(":")[0] for r in rejects["reason"]) == {"excluded category"}
    assert report["read"] == report["kept"] + report["rejected"]


def test_bad_inputs_are_rejected_with_reasons(raw_copy, tmp_path):
    # a corrupt study: gzip stream cut in half
    corrupt = raw_copy / "studies/CT-0/study_0002.nii.gz"
    corrupt.write_bytes(corrupt.read_bytes()[: corrupt.stat().st_size // 2])
    # a valid gzip that is not NIfTI
    (raw_copy / "studies/CT-0/study_0003.nii.gz").write_bytes(gzip.compress(b"x" * 400, mtime=0))
    # listed but missing, unknown category, unlisted file, orphan mask
    (raw_copy / "studies/CT-0/study_0004.nii.gz").unlink()
    registry = raw_copy / "dataset_registry.csv"
    text = registry.read_text(encoding="utf-8-sig")
    text = text.replace("939,CT-2,", "939,CT-7,")
    registry.write_bytes(text.encode("utf-8-sig"))
    shutil.copy(raw_copy / "studies/CT-0/study_0001.nii.gz", raw_copy / "studies/CT-0/extra.nii.gz")
    (raw_copy / "masks/study_0256_mask.nii.gz").rename(raw_copy / "masks/study_0999_mask.nii.gz")

    df, _, rejects, report = run_prepare(raw_copy, tmp_path / "out")
    reasons = dict(zip(rejects["path"], rejects["reason"], strict=True))
    assert reasons["studies/CT-0/study_0002.nii.gz"].startswith("unreadable:")
    assert "corrupt gzip" in reasons["studies/CT-0/study_0002.nii.gz"]
    assert "not a NIfTI file" in reasons["studies/CT-0/study_0003.nii.gz"]
    assert reasons["studies/CT-0/study_0004.nii.gz"].startswith("missing:")
    assert reasons["studies/CT-2/study_0939.nii.gz"] == "unknown category: 'CT-7'"
    assert reasons["studies/CT-0/extra.nii.gz"].startswith("unlisted:")
    assert reasons["masks/study_0999_mask.nii.gz"].startswith("orphan mask:")
    assert report["masks_missing"] == ["masks/study_0256_mask.nii.gz"]
    assert len(df) == 11 - 4
    assert report["read"] == report["kept"] + report["rejected"] == 11 + 2
    assert "study_0256" in df["sample_id"].to_list()  # kept, without its missing mask
    assert df.filter(pl.col("sample_id") == "study_0256")["mask_file"][0] == ""


def test_no_usable_study_is_an_error_and_leaves_no_array(tmp_path):
    raw = tmp_path / "raw" / "studies" / "CT-9"
    raw.mkdir(parents=True)
    (raw / "study_0001.nii.gz").write_bytes(b"")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="no usable MosMedData study"):
        run_prepare(tmp_path / "raw", out)
    assert not (out / "volumes.npy").exists()


def test_prepare_params_are_validated():
    validate(PrepareParams, {"abnormal": ["CT-2", "CT-3", "CT-23"]}, "mosmed.prepare")
    with pytest.raises(ParamsError, match="mosmed.prepare: category CT-0 is listed as both"):
        validate(PrepareParams, {"abnormal": ["CT-0"]}, "mosmed.prepare")
    with pytest.raises(ParamsError, match="unknown category 'CT-9'"):
        validate(PrepareParams, {"normal": ["CT-9"]}, "mosmed.prepare")
    with pytest.raises(ParamsError, match="window"):
        validate(PrepareParams, {"window": [400.0, -1000.0]}, "mosmed.prepare")
    with pytest.raises(ParamsError, match="studies"):
        validate(DemoParams, {"studies": [300, 1, 1, 1, 1]}, "mosmed.demo")


def test_params_yaml_section_is_valid_and_matches_the_reference_method():
    cfg = load_config("mosmed", Path(__file__).resolve().parents[1] / "params.yaml")
    assert cfg.prepare.shape == (64, 128, 128) and cfg.prepare.window == (-1000.0, 400.0)
    assert cfg.prepare.normal == ("CT-0",)
    section = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    reference = section["mosmed"]["train"]["reference"]
    assert reference["model"] == "cnn3d" and reference["batch_size"] == 2
    assert reference["early_stopping_metric"] == "val_accuracy" and reference["patience"] == 15
