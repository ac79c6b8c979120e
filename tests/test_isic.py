"""SIIM-ISIC 2020: demo generator, preparation, reduced-scale JPEG decoding, patient splits."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from dataset_params import digest, load_cfg

from oncopipe.core import config
from oncopipe.core.config import ShardParams
from oncopipe.core.manifest import check_arrays, read_manifest
from oncopipe.datasets.isic import demo as isic_demo
from oncopipe.datasets.isic import prepare as isic_prepare
from oncopipe.datasets.isic.reader import read_duplicates, scan_test
from oncopipe.imagefiles.imagedump import Decode, load_image
from oncopipe.imagefiles.images import ImageError, image_size, read_rgb
from oncopipe.shard.shards import read_index, write_shards

TINY_DEMO = {"seed": 5, "n_patients": 8, "images_per_patient": [2, 4], "n_test": 2,
             "large_images": 1, "duplicates": 1, "malignant_fraction": 0.3}
SIZE = 32


def make_cfg(tmp: Path, raw: Path, demo: dict | None = None, **prepare) -> config.DatasetConfig:
    """A validated config, through the loader the stages use."""
    return load_cfg(tmp, "isic", {"raw": str(raw), "task": "binary", "demo": demo or TINY_DEMO,
                                  "prepare": {"size": SIZE, "workers": 1, **prepare}})


def write_demo(tmp: Path, name: str, **demo) -> Path:
    out = tmp / name
    out.mkdir()
    isic_demo.write_demo(make_cfg(tmp, out, demo={**TINY_DEMO, **demo}), out)
    return out


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def demo_tree(tmp_path_factory) -> Path:
    return write_demo(tmp_path_factory.mktemp("isic"), "raw")


def test_demo_has_the_kaggle_columns_and_value_sets(demo_tree):
    columns, rows = read_csv(demo_tree / "train.csv")
    assert columns == list(isic_demo.TRAIN_COLUMNS)
    assert read_csv(demo_tree / "test.csv")[0] == list(isic_demo.TEST_COLUMNS)
    assert {r["sex"] for r in rows} <= {"male", "female", ""}
    assert {r["anatom_site_general_challenge"] for r in rows} <= {*isic_demo.SITES, ""}
    assert "" in {r["sex"] for r in rows} and "" in {r["age_approx"] for r in rows}
    assert all(r["age_approx"] == "" or (r["age_approx"].endswith(".0")
                                         and float(r["age_approx"]) % 5 == 0) for r in rows)
    for r in rows:
        assert r["diagnosis"] in {*isic_demo.BENIGN_DIAGNOSES, "melanoma"}
        assert (r["target"] == "1") == (r["diagnosis"] == "melanoma") \
            == (r["benign_malignant"] == "malignant")
    per_patient = pl.DataFrame(rows).group_by("patient_id").len()["len"]
    assert per_patient.min() >= 2
    assert [r["image_name"] for r in rows] == sorted(r["image_name"] for r in rows)
    files = sorted(p.stem for p in (demo_tree / "jpeg" / "train").iterdir())
    assert files == sorted(r["image_name"] for r in rows)
    sizes = [image_size(p) for p in (demo_tree / "jpeg" / "train").iterdir()]
    assert max(max(s) for s in sizes) >= 3000 and min(min(s) for s in sizes) <= 640
    assert len(read_csv(demo_tree / isic_demo.DUPLICATES_FILE)[1]) == 1


def test_demo_is_byte_identical_for_the_same_seed(tmp_path, demo_tree):
    assert digest(write_demo(tmp_path, "again")) == digest(demo_tree)
    assert digest(write_demo(tmp_path, "other", seed=6)) != digest(demo_tree)


def test_reduced_decode_is_used_and_matches_full_decode(demo_tree):
    """The large photograph decodes at 1/8 scale; after the resize to the output size it
    differs from full decode + resize by under 2 grey levels on average (max 40)."""
    large = max((demo_tree / "jpeg" / "train").iterdir(), key=lambda p: max(image_size(p)))
    h, w = image_size(large)
    assert read_rgb(large, min_side=SIZE).shape == (3, -(-h // 8), -(-w // 8))
    fast = load_image(large, Decode(size=(SIZE, SIZE), reduced=True)).astype(int)
    full = load_image(large, Decode(size=(SIZE, SIZE), reduced=False)).astype(int)
    assert np.abs(fast - full).mean() < 2.0
    assert np.abs(fast - full).max() < 40


def _add_quirks(raw: Path) -> dict[str, str]:
    """Break a copy of the demo in every way the reader must survive; path -> reason."""
    columns, rows = read_csv(raw / "train.csv")
    _, (pair,) = read_csv(raw / isic_demo.DUPLICATES_FILE)
    names = [r["image_name"] for r in rows if r["image_name"] not in pair.values()]
    expected = {f"jpeg/train/{pair['image_name_2']}.jpg": "duplicate"}
    jpg = raw / "jpeg" / "train"
    data = (jpg / f"{names[0]}.jpg").read_bytes()
    (jpg / f"{names[0]}.jpg").write_bytes(data[: len(data) // 2])
    expected[f"jpeg/train/{names[0]}.jpg"] = "truncated"
    (jpg / f"{names[1]}.jpg").write_bytes(b"not a jpeg at all" * 10 + b"\xff\xd9")
    expected[f"jpeg/train/{names[1]}.jpg"] = "unreadable"
    (jpg / f"{names[2]}.jpg").unlink()
    expected[f"jpeg/train/{names[2]}.jpg"] = "file missing"
    shutil.copy(jpg / f"{names[3]}.jpg", jpg / "ISIC_0000001.jpg")
    expected["jpeg/train/ISIC_0000001.jpg"] = "missing from CSV"
    (jpg / "Thumbs.db").write_bytes(b"x")
    expected["jpeg/train/Thumbs.db"] = "unexpected entry"
    by_name = {r["image_name"]: r for r in rows}
    by_name[names[4]]["diagnosis"] = "melanoma"  # target stays 0
    expected[f"jpeg/train/{names[4]}.jpg"] = "inconsistent label"
    by_name[names[5]]["target"] = "0.5"
    expected[f"jpeg/train/{names[5]}.jpg"] = "unknown label"
    by_name[names[6]]["patient_id"] = ""
    expected[f"jpeg/train/{names[6]}.jpg"] = "no patient id"
    with open(raw / "train.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        writer.writerow(by_name[names[7]])  # the same image listed twice
    expected[f"train.csv:{len(rows) + 2}"] = "duplicate row"
    return expected


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, demo_tree) -> tuple[Path, Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("isic-prep")
    raw = tmp / "raw"
    shutil.copytree(demo_tree, raw)
    expected = _add_quirks(raw)
    out = tmp / "out"
    out.mkdir()
    isic_prepare.prepare(make_cfg(tmp, raw), out)
    return raw, out, expected


def test_prepare_accounts_for_every_item(prepared):
    raw, out, expected = prepared
    rejects = pl.read_parquet(out / "rejects.parquet")
    got = {p: r.split(":")[0] for p, r in rejects.select("path", "reason").iter_rows()}
    assert got == expected
    report = json.loads((out / "report.json").read_text())
    assert report["read"] == report["kept"] + report["rejected"]
    n_rows = len(read_csv(raw / "train.csv")[1])
    assert report["read"] == n_rows + 2  # every row, plus the orphan image and Thumbs.db
    assert report["duplicates_list"]["dropped"] == 1
    assert report["not_used"]["files"] == 2


def test_manifest_has_patients_labels_and_metadata(prepared):
    raw, out, _ = prepared
    df, meta = read_manifest(out / "manifest.parquet")
    check_arrays(df, meta, out)
    assert meta.class_names == ("benign", "malignant") and meta.patient_level is True
    rows = {r["image_name"]: r for r in read_csv(raw / "train.csv")[1]}
    for r in df.iter_rows(named=True):
        csv_row = rows[r["sample_id"]]
        assert r["patient_id"] == csv_row["patient_id"]
        assert r["label"] == int(csv_row["target"])
        assert r["age_approx"] == (float(csv_row["age_approx"]) if csv_row["age_approx"]
                                   else None)
        assert r["sex"] == (csv_row["sex"] or None)
    assert df["age_approx"].dtype == pl.Float64
    assert np.load(out / "images.npy").shape == (len(df), 3, SIZE, SIZE)
    assert set(df["label"].to_list()) == {0, 1}


def test_shards_keep_each_patient_in_one_split(prepared, tmp_path):
    _, out, _ = prepared
    params = ShardParams(ratios=(0.5, 0.25, 0.25), balance="undersample")
    write_shards(out, tmp_path / "shards", params, seed=1)
    index = read_index(tmp_path / "shards")
    splits_per_patient = index.group_by("patient_id").agg(pl.col("split").n_unique())
    assert splits_per_patient["split"].max() == 1
    train = index.filter(pl.col("split") == "train")
    assert train.filter(pl.col("label") == 0).height == train.filter(pl.col("label") == 1).height


def test_preprocess_one_matches_prepare_and_names_bad_files(prepared, tmp_path):
    raw, out, _ = prepared
    cfg = make_cfg(tmp_path, raw)
    df, _ = read_manifest(out / "manifest.parquet")
    row = df.row(0, named=True)
    arr = isic_prepare.preprocess_one(cfg, raw / row["source"])
    assert np.array_equal(arr, np.load(out / "images.npy")[row["array_index"]])
    broken = next(p for p, r in _reasons(out).items() if r == "truncated")
    with pytest.raises(ImageError, match=r"ISIC_\d{7}\.jpg.*truncated"):
        isic_prepare.preprocess_one(cfg, raw / broken)


def _reasons(out: Path) -> dict[str, str]:
    rejects = pl.read_parquet(out / "rejects.parquet")
    return {p: r.split(":")[0] for p, r in rejects.select("path", "reason").iter_rows()}


def test_bad_layout_and_params_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"train\.csv: not found"):
        isic_prepare.prepare(make_cfg(tmp_path, tmp_path), tmp_path)
    (tmp_path / "train.csv").write_text("image_name,target\nISIC_1,0\n")
    with pytest.raises(ValueError, match=r"train\.csv: missing column.*patient_id"):
        isic_prepare.prepare(make_cfg(tmp_path, tmp_path), tmp_path)
    with pytest.raises(config.ParamsError, match=r"isic\.prepare.*size"):
        make_cfg(tmp_path, tmp_path, size=2)


def test_short_rows_of_the_side_csvs_are_named_not_crashed_on(tmp_path):
    dup = tmp_path / "dup.csv"
    dup.write_text("image_name_1,image_name_2\nISIC_1,ISIC_2\nISIC_3\n")
    with pytest.raises(ValueError, match=r"dup\.csv: line 3 needs both image_name_1"):
        read_duplicates(dup)
    (tmp_path / "test.csv").write_text("patient_id,image_name\nP1,ISIC_9\nP2\n")
    summary = scan_test(tmp_path, "jpeg/test")
    assert summary["csv_rows"] == 2 and summary["csv_rows_without_file"] == 2
