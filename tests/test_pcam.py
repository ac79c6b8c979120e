"""PCam (Kaggle histopathologic-cancer-detection): demo generator and preparation."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pytest
from dataset_params import digest, load_cfg

from oncopipe.core import config
from oncopipe.core.manifest import check_arrays, read_manifest
from oncopipe.datasets.pcam import demo as pcam_demo
from oncopipe.datasets.pcam import prepare as pcam_prepare
from oncopipe.imagefiles.images import ImageError

TINY_DEMO = {"seed": 3, "n_train": 30, "n_test": 3}


def make_cfg(tmp: Path, raw: Path, demo: dict | None = None, **prepare) -> config.DatasetConfig:
    """A validated config, through the loader the stages use."""
    return load_cfg(tmp, "pcam", {"raw": str(raw), "task": "binary", "demo": demo or TINY_DEMO,
                                  "prepare": {"workers": 1, **prepare}})


def write_demo(tmp: Path, name: str, **demo) -> Path:
    out = tmp / name
    out.mkdir()
    pcam_demo.write_demo(make_cfg(tmp, out, demo={**TINY_DEMO, **demo}), out)
    return out


def read_labels(raw: Path) -> dict[str, int]:
    with open(raw / "train_labels.csv", newline="") as fh:
        return {r["id"]: int(r["label"]) for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def demo_tree(tmp_path_factory) -> Path:
    return write_demo(tmp_path_factory.mktemp("pcam"), "raw")


def test_demo_has_the_kaggle_layout(demo_tree):
    labels = read_labels(demo_tree)
    assert len(labels) == 30
    assert all(re.fullmatch(r"[0-9a-f]{40}", i) for i in labels)
    assert set(labels.values()) == {0, 1}
    assert sorted(p.stem for p in (demo_tree / "train").iterdir()) == sorted(labels)
    img = cv2.imread(str(demo_tree / "train" / f"{next(iter(labels))}.tif"), cv2.IMREAD_UNCHANGED)
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    with open(demo_tree / "sample_submission.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", "label"]
    assert sorted(r[0] for r in rows[1:]) == sorted(p.stem for p in (demo_tree / "test").iterdir())


def test_demo_label_means_tumour_in_the_centre(demo_tree):
    """Tumour nuclei are the darkest pixels: many in the centre 32 x 32 exactly for positives."""
    for image_id, label in read_labels(demo_tree).items():
        rgb = cv2.imread(str(demo_tree / "train" / f"{image_id}.tif"))[..., ::-1]
        dark_in_centre = int((rgb[32:64, 32:64, 1] < 50).sum())
        assert (dark_in_centre > 40) == bool(label), (image_id, label, dark_in_centre)


def test_demo_is_byte_identical_for_the_same_seed(tmp_path, demo_tree):
    again = write_demo(tmp_path, "again")
    assert digest(again) == digest(demo_tree)
    other = write_demo(tmp_path, "other", seed=4)
    assert digest(other) != digest(demo_tree)


def _add_quirks(raw: Path) -> dict[str, str]:
    """Break a copy of the demo in every way the reader must survive; path -> reason."""
    labels = read_labels(raw)
    ids = sorted(labels)
    expected = {}
    truncated = raw / "train" / f"{ids[0]}.tif"
    truncated.write_bytes(truncated.read_bytes()[:5000])
    expected[f"train/{ids[0]}.tif"] = "unreadable"
    small = np.zeros((64, 64, 3), np.uint8)
    cv2.imwrite(str(raw / "train" / f"{ids[1]}.tif"), small)
    expected[f"train/{ids[1]}.tif"] = "wrong size"
    (raw / "train" / f"{ids[2]}.tif").unlink()
    expected[f"train/{ids[2]}.tif"] = "file missing"
    orphan = "f" * 40
    shutil.copy(raw / "train" / f"{ids[3]}.tif", raw / "train" / f"{orphan}.tif")
    expected[f"train/{orphan}.tif"] = "missing from CSV"
    (raw / "train" / ".DS_Store").write_bytes(b"\0\1")
    expected["train/.DS_Store"] = "unexpected entry"
    with open(raw / "train_labels.csv", "a", newline="") as fh:
        fh.write(f"{ids[4]},{labels[ids[4]]}\n")  # the same row again for an id already listed
        fh.write("a" * 40 + ",2\n")  # unknown label; give it a file
    shutil.copy(raw / "train" / f"{ids[5]}.tif", raw / "train" / f"{'a' * 40}.tif")
    expected[f"train/{'a' * 40}.tif"] = "unknown label"
    expected["train_labels.csv:32"] = "duplicate row"
    return expected


def test_prepare_accounts_for_every_item(tmp_path, demo_tree):
    raw = tmp_path / "raw"
    shutil.copytree(demo_tree, raw)
    expected = _add_quirks(raw)
    out = tmp_path / "out"
    out.mkdir()
    pcam_prepare.prepare(make_cfg(tmp_path, raw), out)

    rejects = pl.read_parquet(out / "rejects.parquet")
    got = {p: r.split(":")[0] for p, r in rejects.select("path", "reason").iter_rows()}
    assert got == expected
    report = json.loads((out / "report.json").read_text())
    assert report["read"] == report["kept"] + report["rejected"]
    assert report["read"] == 30 + 3 + 1  # 30 rows/files, orphan, stray file, duplicate row
    assert report["not_used"]["files"] == 3

    df, meta = read_manifest(out / "manifest.parquet")
    check_arrays(df, meta, out)
    assert meta.class_names == ("negative", "positive") and meta.layout == "CHW"
    assert meta.patient_level is False
    assert df["sample_id"].to_list() == df["patient_id"].to_list()
    labels = read_labels(demo_tree)
    assert len(df) == report["kept"] == 30 - 3
    assert all(labels[s] == lab for s, lab in df.select("sample_id", "label").iter_rows())
    arr = np.load(out / "images.npy")
    assert arr.shape == (len(df), 3, 96, 96) and arr.dtype == np.uint8
    first = df.row(0, named=True)
    rgb = cv2.imread(str(raw / first["source"]))[..., ::-1].transpose(2, 0, 1)
    assert np.array_equal(arr[first["array_index"]], rgb)
    assert (out / "contact_sheet.png").stat().st_size > 0


def test_prepare_is_identical_across_worker_counts(tmp_path, demo_tree):
    """Only the params hash in the manifest metadata may differ (``workers`` is a param)."""
    outs, tables = [], []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        out.mkdir()
        pcam_prepare.prepare(make_cfg(tmp_path, demo_tree, workers=workers), out)
        outs.append({k: v for k, v in digest(out).items() if k != "manifest.parquet"})
        tables.append(read_manifest(out / "manifest.parquet")[0])
    assert outs[0] == outs[1]
    assert tables[0].equals(tables[1])


def test_preprocess_one_matches_prepare_and_names_bad_files(tmp_path, demo_tree):
    cfg = make_cfg(tmp_path, demo_tree)
    image_id = sorted(read_labels(demo_tree))[0]
    arr = pcam_prepare.preprocess_one(cfg, demo_tree / "train" / f"{image_id}.tif")
    assert arr.shape == (3, 96, 96)
    out = tmp_path / "out"
    out.mkdir()
    pcam_prepare.prepare(cfg, out)
    df, _ = read_manifest(out / "manifest.parquet")
    row = df.filter(pl.col("sample_id") == image_id).row(0, named=True)
    assert np.array_equal(arr, np.load(out / "images.npy")[row["array_index"]])
    bad = tmp_path / "small.tif"
    cv2.imwrite(str(bad), np.zeros((50, 96, 3), np.uint8))
    with pytest.raises(ImageError, match=r"small\.tif.*wrong size"):
        pcam_prepare.preprocess_one(cfg, bad)


def test_bad_layout_and_params_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"train_labels\.csv: not found"):
        pcam_prepare.prepare(make_cfg(tmp_path, tmp_path), tmp_path)
    with pytest.raises(config.ParamsError, match=r"pcam\.demo.*positive_fraction"):
        make_cfg(tmp_path, tmp_path, demo={"positive_fraction": 1.5})
