"""LIDC crops: geometry (centre = lesion centroid), border padding, manifest, determinism."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from dataset_params import LIDC_SMALL as SMALL
from dataset_params import lidc_demo
from scipy import ndimage

from oncopipe.core.config import DatasetConfig, EvaluateParams, ShardParams, TrainParams
from oncopipe.core.manifest import check_arrays, read_manifest
from oncopipe.datasets.lidc import crops
from oncopipe.datasets.lidc import prepare as lidc
from oncopipe.datasets.lidc.params import CropParams, PrepareParams
from oncopipe.datasets.lidc.pixels import StoredVolume
from oncopipe.datasets.lidc.series import AIR_HU, SeriesHeader, Slice

OUTPUTS = ("manifest.parquet", "crops_2d.npy", "crops_3d.npy", "rejects.parquet", "report.json",
           "contact_sheet.png")


def _header(zs, spacing_xy=(0.8, 0.6), shape=(100, 120)) -> SeriesHeader:
    slices = [Slice(Path(f"{i}.dcm"), f"1.{i}", float(z), i + 1) for i, z in enumerate(zs)]
    return SeriesHeader("LIDC-IDRI-0001", "1.1", "1.2", Path("."), slices, (-50.0, -40.0),
                        spacing_xy, shape, 2.0)


def _blob_volume(header: SeriesHeader, k: int, i: int, j: int) -> np.ndarray:
    vol = np.full((len(header.slices), *header.shape_yx), AIR_HU, np.float32)
    vol[k - 1:k + 2, i - 1:i + 2, j - 1:j + 2] = 500.0
    return vol


def _centre_of_mass(crop: np.ndarray) -> np.ndarray:
    return np.array(ndimage.center_of_mass(np.clip(crop - AIR_HU, 0, None)))


def test_2d_crop_centre_is_the_lesion_centroid():
    h = _header(np.arange(12) * 2.0)
    k, i, j = 5, 40, 60
    vol = _blob_volume(h, k, i, j)
    x, y, _ = h.voxel_to_mm(k, i, j)
    p = CropParams()
    crop = crops.crop_2d(vol[k], h, x, y, p)
    assert crop.shape == (64, 64)
    centre = (p.size_2d - 1) / 2
    # within a voxel: the input voxel is 0.6-0.8 mm, the crop pixel 0.7 mm
    assert np.allclose(_centre_of_mass(crop), (centre, centre), atol=0.5)


def test_3d_crop_centre_is_the_lesion_centroid():
    h = _header(np.arange(24) * 2.0)
    k, i, j = 10, 40, 60
    p = CropParams()
    crop = crops.crop_3d(StoredVolume.from_hu(_blob_volume(h, k, i, j)), h,
                         h.voxel_to_mm(k, i, j), p)
    assert crop.shape == (32, 32, 32)
    c = (p.size_3d - 1) / 2
    assert np.allclose(_centre_of_mass(crop), (c, c, c), atol=1.0)  # 1 voxel = 1 mm here


def test_border_lesion_is_padded_with_air_not_dropped():
    h = _header(np.arange(12) * 2.0)
    vol = np.full((12, *h.shape_yx), 40.0, np.float32)
    x, y, z = h.voxel_to_mm(0, 0, 0)  # the corner voxel of the volume
    crop2 = crops.crop_2d(vol[0], h, x, y, CropParams())
    assert np.all(crop2[:30, :30] == AIR_HU)
    assert np.allclose(crop2[34:, 34:], 40.0)
    crop3 = crops.crop_3d(StoredVolume.from_hu(vol), h, (x, y, z), CropParams())
    assert np.all(crop3[:14, :14, :14] == AIR_HU)
    assert np.allclose(crop3[18:, 18:, 18:], 40.0, atol=1e-3)
    far = crops.crop_3d(StoredVolume.from_hu(vol), h, (x - 500, y, z), CropParams())
    assert np.all(far == AIR_HU)


def test_window():
    out = crops.window(np.array([-2000.0, -1000.0, -300.0, 400.0, 3000.0]), (-1000.0, 400.0))
    assert out.dtype == np.float16
    assert np.allclose(out, [0, 0, 0.5, 1, 1], atol=1e-3)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("lidc")
    table, _ = lidc_demo(root)
    return root, table


def _cfg(root: Path, task: str = "nodule_type", workers: int = 1, **crop) -> DatasetConfig:
    prepare = PrepareParams(workers=workers, crops=dataclasses.replace(CropParams(), **crop))
    return DatasetConfig(name="lidc", seed=0, raw=root / "raw", task=task, profile="demo",
                         demo=SMALL, prepare=prepare, shard=ShardParams(), train=TrainParams(),
                         evaluate=EvaluateParams())


def test_prepare_2d_manifest_and_crops(demo, tmp_path):
    root, table = demo
    cfg = _cfg(root)
    lidc.crop_table(cfg, tmp_path, root / "lesions.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(OUTPUTS)
    df, meta = read_manifest(tmp_path / "manifest.parquet")
    check_arrays(df, meta, tmp_path)
    assert meta.layout == "CHW" and meta.class_names == ("nodule", "small_nodule", "non_nodule")
    assert meta.normalisation["hu_window"] == [-1000.0, 400.0]
    assert len(df) == sum(len(s) for s in table["slices"])  # every annotated slice
    assert set(df["label"]) == {0, 1, 2}
    assert set(df["lesion_id"]) == set(table["lesion_id"])
    arr = np.load(tmp_path / "crops_2d.npy", mmap_mode="r")
    assert arr.shape[1:] == (1, 64, 64) and arr.dtype == np.float16
    assert float(arr.min()) >= 0 and float(arr.max()) <= 1
    nodule_rows = df.filter(df["kind"] == "nodule")["array_index"].to_numpy()
    centres = arr[nodule_rows, 0, 30:34, 30:34].astype(np.float32).mean(axis=(1, 2))
    assert np.median(centres) > 0.5  # nodule tissue (about 0.7) at the centre, not lung (0.1)

    # one raw series + a point -> the same crop as prepare wrote
    row = df.filter(df["kind"] == "nodule").row(0, named=True)
    header = lidc.load_series(root / "raw" / row["source"].split(";")[0])
    one = lidc.preprocess_one(cfg, header.folder, (row["x_mm"], row["y_mm"],
                                                   header.zs[row["slice"]]))
    assert one.shape == (1, 64, 64)
    assert np.array_equal(one, arr[row["array_index"]])


def test_prepare_is_byte_identical_whatever_the_worker_count(demo, tmp_path):
    root, _ = demo
    lidc.crop_table(_cfg(root, workers=1), tmp_path / "a", root / "lesions.parquet")
    lidc.crop_table(_cfg(root, workers=2), tmp_path / "b", root / "lesions.parquet")
    for name in OUTPUTS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_prepare_malignancy_leaves_out_indeterminate_and_records_it(demo, tmp_path):
    root, table = demo
    lidc.crop_table(_cfg(root, task="malignancy", input="3d"), tmp_path, root / "lesions.parquet")
    df, meta = read_manifest(tmp_path / "manifest.parquet")
    check_arrays(df, meta, tmp_path)
    assert meta.layout == "CDHW" and meta.class_names == ("benign", "malignant")
    assert np.load(tmp_path / "crops_3d.npy", mmap_mode="r").shape[1:] == (1, 32, 32, 32)
    assert df["sample_id"].str.ends_with("-3d").all()
    assert (df["kind"] == "nodule").all()
    assert ((df["malignancy"] > 3) == (df["label"] == 1)).all()
    assert (df["malignancy"] != 3).all()
    rejects = pq.read_table(tmp_path / "rejects.parquet").to_pylist()
    assert len(df) + len(rejects) == len(table)  # every lesion accounted for
    assert any("median rating 3" in r["reason"] for r in rejects)
    assert any("has no malignancy rating" in r["reason"] for r in rejects)


def test_preprocess_one_needs_a_point(demo):
    root, _ = demo
    with pytest.raises(ValueError, match="needs a point"):
        lidc.preprocess_one(_cfg(root), root / "raw", None)


def test_smoothing_is_simpleitks_discrete_gaussian_bit_for_bit():
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    image = (rng.normal(size=(9, 30, 25)) * 300 - 500).astype(np.float32)
    spacing = (0.62, 0.7, 2.5)  # x, y, z
    for variances in ([0.15, 0.13, 0.0], [1.5, 0.8, 2.0]):  # mm^2, x y z
        sitk_image = sitk.GetImageFromArray(image)
        sitk_image.SetSpacing(spacing)
        reference = sitk.GetArrayFromImage(sitk.DiscreteGaussian(sitk_image, variances, 32,
                                                                 0.01, True))
        ours = crops.smooth(image, [v / s ** 2 for v, s in zip(variances, spacing, strict=True)])
        assert ours.dtype == np.float32 and ours.tobytes() == reference.tobytes()


def test_2d_crop_reads_only_the_pixels_it_needs():
    h = _header(np.arange(12) * 2.0)
    vol = _blob_volume(h, 5, 40, 60)
    x, y, _ = h.voxel_to_mm(5, 40, 60)
    asked = []

    def part(ys: slice, xs: slice) -> np.ndarray:
        asked.append((ys, xs))
        return vol[5][ys, xs]

    crop = crops.crop_2d(part, h, x, y, CropParams())
    assert np.array_equal(crop, crops.crop_2d(vol[5], h, x, y, CropParams()))
    (ys, xs), = asked
    assert ys.stop - ys.start < h.shape_yx[0] and xs.stop - xs.start < h.shape_yx[1]
