"""LIDC raw pixel reads: same HU and same crops as the pydicom path, stale files caught."""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from dataset_params import LIDC_SMALL as SMALL
from dataset_params import lidc_demo
from lidc_reference import crop_series, read_volume, write_series
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

from oncopipe.core.config import DatasetConfig, EvaluateParams, ShardParams, TrainParams
from oncopipe.core.errors import InputError
from oncopipe.datasets.lidc import crops, slice_table
from oncopipe.datasets.lidc import prepare as lidc
from oncopipe.datasets.lidc.params import CropParams, PrepareParams
from oncopipe.datasets.lidc.pixels import StaleSliceError, read_series
from oncopipe.datasets.lidc.series import read_headers

ZS = [-40.0, -37.5, -35.0, -30.0, -27.5, -25.0]  # one slice missing: an uneven z grid
CASES = {
    "int16, padding -2000 as US": {},
    "uint16 12 bits, garbage high bits, padding range, slope 1.5": dict(
        signed=False, bits_stored=12, pad=0, pad_limit=30, slope=1.5, intercept=-1024.5,
        garbage_bits=True),
    "int16 12 bits, garbage high bits, no padding": dict(bits_stored=12, pad=None,
                                                         garbage_bits=True),
    "slope 0.1, intercept -1024.3 (not exact in float32)": dict(slope=0.1, intercept=-1024.3),
    "implicit VR": dict(syntax=ImplicitVRLittleEndian),
    "RLE (pydicom path)": dict(syntax=RLELossless),
}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _agrees(a: np.ndarray, b: np.ndarray) -> bool:
    """Within one float16 step of the windowed value: numpy's smoothing rounds where
    SimpleITK's DiscreteGaussian rounded differently (up to a few 1e-5 HU)."""
    return (a.shape == b.shape and a.dtype == b.dtype
            and float(np.abs(a.astype(np.float32) - b.astype(np.float32)).max()) <= 2 ** -11)


@pytest.fixture(scope="module")
def series_512(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct512")
    out = {}
    for n, (name, kw) in enumerate(CASES.items()):
        files = write_series(root / f"s{n}", ZS, seed=n, **kw)
        (header,), rejects = read_headers(files)
        assert not rejects
        out[name] = header
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_raw_reads_give_the_pydicom_hu_bit_for_bit(series_512, case):
    header = series_512[case]
    plain = {s.layout.plain for s in header.slices}
    assert plain == ({False} if "RLE" in case else {True})
    volume = read_series(header)
    assert volume.stored.dtype == (np.float32 if "RLE" in case else
                                   np.uint16 if "uint16" in case else np.int16)
    reference = read_volume(header)
    assert _same(volume.hu(slice(None)), reference)
    assert _same(volume.hu(3), reference[3])
    ks = np.array([4, 0, 2])
    assert _same(volume.hu(ks, slice(100, 300), slice(7, 500)), reference[ks, 100:300, 7:500])
    part = read_series(header, [4, 1], reuse=read_series(header, [1, 2]))  # 1 reused, 4 read
    assert _same(part.hu(np.array([1, 4]), slice(9, 99)), reference[[1, 4], 9:99])
    with pytest.raises(IndexError, match="not read"):
        part.hu(2)
    band = read_series(header, [4, 1], rows=slice(100, 300))  # only these rows' bytes
    assert band.stored.shape[1] == 200
    assert _same(band.hu(np.array([1, 4]), slice(120, 300), slice(7, 500)),
                 reference[[1, 4], 120:300, 7:500])
    with pytest.raises(IndexError, match="rows 0:512:1 of the slices were not read"):
        band.hu(1)
    inner = read_series(header, [1, 3], reuse=band, rows=slice(150, 160))  # 1 from the band
    outer = read_series(header, [1, 3], reuse=band, rows=slice(50, 160))  # band too short
    assert _same(inner.hu(np.array([1, 3]), slice(150, 160)), reference[[1, 3], 150:160])
    assert _same(outer.hu(np.array([1, 3]), slice(50, 160)), reference[[1, 3], 50:160])
    if CASES[case].get("pad", 63536) is not None:
        assert (reference == -1000).mean() > 0.3  # the padding mask was exercised


@pytest.mark.parametrize("case", list(CASES)[:2])
def test_crops_match_the_old_path_on_a_512_series(series_512, case):
    header = series_512[case]
    p = CropParams()
    points = [header.voxel_to_mm(*v) for v in [(2.0, 256, 300), (4.6, 250, 40), (0, 256, 256),
                                               (5, 300, 420), (0, 0, 0)]]
    marks = [{"x_mm": x, "y_mm": y, "z_mm": z, "slices": [round(header.mm_to_voxel(
        x, y, z)[0])]} for x, y, z in points]
    old_2d, old_3d = crop_series(header.folder, header.series_uid, marks, p)
    volume = read_series(header)
    for mark, o2, o3 in zip(marks, old_2d, old_3d, strict=True):
        hu = crops.crop_2d(volume.hu(mark["slices"][0]), header, mark["x_mm"], mark["y_mm"], p)
        assert _same(crops.window(hu, p.hu_window)[None], o2)
        hu = crops.crop_3d(volume, header, (mark["x_mm"], mark["y_mm"], mark["z_mm"]), p)
        assert _agrees(crops.window(hu, p.hu_window)[None], o3)
    assert len({o.tobytes() for o in old_3d}) == len(old_3d)  # distinct crops compared
    assert (old_3d[-1] == 0).all()  # the corner: air, padded


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("lidc")
    return root, *lidc_demo(root)


def _cfg(root: Path, **crop) -> DatasetConfig:
    prepare = PrepareParams(workers=1, crops=dataclasses.replace(CropParams(), **crop))
    return DatasetConfig(name="lidc", seed=0, raw=root / "raw", task="nodule_type",
                         profile="demo", demo=SMALL, prepare=prepare, shard=ShardParams(),
                         train=TrainParams(), evaluate=EvaluateParams())


def test_crops_of_two_series_interleaved_across_threads_are_each_series_own(series_512):
    """The series geometry cached between a series' lesions is the right series' geometry when
    crops of two series (different origins) alternate, in one thread and in several (serve
    crops in a pool of threads)."""
    base = series_512["int16, padding -2000 as US"]
    shifted = dataclasses.replace(base, origin_xy=(base.origin_xy[0] + 7.3,
                                                   base.origin_xy[1] - 4.1))
    volume, p = read_series(base), CropParams()
    point = base.voxel_to_mm(2.5, 250, 260)

    def crop(header):
        return crops.crop_3d(volume, header, point, p)

    expected = {id(h): crop(h) for h in (base, shifted)}
    assert not np.array_equal(expected[id(base)], expected[id(shifted)])
    order = [base, shifted] * 20
    assert all(np.array_equal(crop(h), expected[id(h)]) for h in order)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(crop, order))
    assert all(np.array_equal(g, expected[id(h)]) for g, h in zip(got, order, strict=True))


def test_prepare_writes_the_old_paths_crops_on_the_demo(demo, tmp_path):
    root, table, _ = demo
    p = CropParams(max_slices=0)
    lidc.crop_table(_cfg(root, max_slices=0), tmp_path, root / "lesions.parquet")
    old_2d, old_3d = [], []
    by_series: dict[tuple[str, str], list[dict]] = {}
    for row in table.sort("lesion_id").iter_rows(named=True):
        by_series.setdefault((row["series_dir"], row["series_uid"]), []).append(row)
    for (series_dir, uid), rows in sorted(by_series.items()):
        c2, c3 = crop_series(root / "raw" / series_dir, uid, rows, p)
        old_2d += c2
        old_3d += c3
    assert _same(np.load(tmp_path / "crops_2d.npy"), np.stack(old_2d))
    assert _agrees(np.load(tmp_path / "crops_3d.npy"), np.stack(old_3d))
    assert len(by_series) >= 6 and len(old_3d) == len(table)


def test_slice_table_gives_back_the_headers(demo):
    root, table, slices = demo
    headers = slice_table.read(root / "lesions_slices.parquet", root / "raw")
    assert set(headers) == set(zip(table["series_dir"], table["series_uid"], strict=True))
    files = [p for p in (root / "raw").rglob("*.dcm")]
    fresh = {h.series_uid: h for h in read_headers(files)[0]}
    for (_, uid), h in headers.items():
        f = fresh[uid]
        assert h.slices == f.slices  # paths, z, SOP, layouts
        assert (h.origin_xy, h.spacing_xy, h.shape_yx, h.slice_thickness, h.z_step) == (
            f.origin_xy, f.spacing_xy, f.shape_yx, f.slice_thickness, f.z_step)
    assert len(slices) == sum(len(h.slices) for h in headers.values())


def test_a_file_changed_after_the_header_pass_is_caught(tmp_path):
    files = write_series(tmp_path / "s", ZS[:3], rows=64)
    (header,), _ = read_headers(files)
    victim = header.slices[1].path
    data = bytearray(victim.read_bytes())
    at = data.find(b"LIDC-IDRI-9999")
    data[at:at + 14] = b"LIDC-IDRI-9998"  # same size, another header
    victim.write_bytes(bytes(data))
    with pytest.raises(StaleSliceError, match=str(victim)):
        read_series(header)
    os.remove(victim)
    with pytest.raises(StaleSliceError, match="gone"):
        read_series(header)


def test_prepare_needs_the_slice_table(demo, tmp_path):
    root, _, _ = demo
    lone = tmp_path / "t"
    lone.mkdir()
    (lone / "lesions.parquet").write_bytes((root / "lesions.parquet").read_bytes())
    with pytest.raises(InputError, match="lesions_slices.parquet: slice table not found"):
        lidc.crop_table(_cfg(root), tmp_path / "out", lone / "lesions.parquet")
