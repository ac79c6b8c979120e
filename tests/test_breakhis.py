"""BreakHis v1: name parsing, tree walk, demo generator and preparation, on generated data."""

from __future__ import annotations

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
from oncopipe.datasets.breakhis import demo as breakhis_demo
from oncopipe.datasets.breakhis import demo as demo_module
from oncopipe.datasets.breakhis import prepare as breakhis_prepare
from oncopipe.datasets.breakhis.naming import (
    SUBTYPES,
    BreakHisNameError,
    ImageName,
    location_mismatch,
    parse_file_name,
    parse_folder_name,
)
from oncopipe.datasets.breakhis.tree import find_breast_root
from oncopipe.imagefiles.images import ImageError
from oncopipe.ingest.rawfiles import RawLayoutError

TINY_DEMO = {"seed": 7, "patients_per_subtype": 2, "images_per_magnification": [1, 2]}


def make_cfg(tmp: Path, raw: Path, task: str = "binary", demo: dict | None = None,
             **prepare) -> config.DatasetConfig:
    """A validated config, through the same loader the stages use."""
    return load_cfg(tmp, "breakhis", {"raw": str(raw), "task": task, "demo": demo or TINY_DEMO,
                                      "prepare": {"image_size": 32, "workers": 1, **prepare}})


def write_demo(tmp: Path, name: str, **demo) -> Path:
    out = tmp / name
    out.mkdir()
    breakhis_demo.write_demo(make_cfg(tmp, out, demo={**TINY_DEMO, **demo}), out)
    return out


@pytest.fixture(scope="module")
def kaggle_tree(tmp_path_factory) -> Path:
    return write_demo(tmp_path_factory.mktemp("bh"), "kaggle", layout="kaggle")


# ---- names ---------------------------------------------------------------------------------


def test_file_name_is_parsed_into_its_parts():
    n = parse_file_name("SOB_B_A-14-22549AB-40-001.png")
    assert (n.code, n.year, n.slide, n.magnification, n.seq) == ("A", "14", "22549AB", 40, 1)
    assert (n.subtype, n.tumor_class) == ("adenosis", "benign")
    assert n.folder == "SOB_B_A_14-22549AB"
    assert n.expected_parts() == ("benign", "SOB", "adenosis", "SOB_B_A_14-22549AB", "40X",
                                  "SOB_B_A-14-22549AB-40-001.png")
    m = parse_file_name("SOB_M_MC-15-190EF-400-012.png")
    assert (m.subtype, m.tumor_class, m.year, m.magnification) == (
        "mucinous_carcinoma", "malignant", "15", 400)


@pytest.mark.parametrize(("name", "needle"), [
    ("SOB_B_A_14-22549AB-40-001.png", "folder convention"),
    ("SOB_B_A-14-22549AB-40X-001.png", "with 'X'"),
    ("SOB_B_A-14-22549AB-40-01.png", "is not SOB_"),
    ("SOB_B_XX-14-22549AB-40-001.png", "unknown subtype code 'XX'"),
    ("SOB_B_DC-14-13412-40-001.png", "is malignant but the name says B"),
    ("SOB_M_DC-14-13412-50-001.png", "magnification '50'"),
    ("SOB_M_DC-14-13412-040-001.png", "magnification '040'"),
])
def test_malformed_file_names_are_refused_with_the_reason(name, needle):
    with pytest.raises(BreakHisNameError, match=needle.replace("(", r"\(")):
        parse_file_name(name)


def test_folder_names_and_their_hyphen_mistake():
    assert parse_folder_name("SOB_M_LC_14-13412") == ("LC", "14", "13412")
    with pytest.raises(BreakHisNameError, match="hyphen before the year"):
        parse_folder_name("SOB_M_LC-14-13412")


def test_patient_id_is_the_slide_and_shared_across_subtypes():
    dc = parse_file_name("SOB_M_DC-14-13412-100-001.png")
    lc = parse_file_name("SOB_M_LC-14-13412-100-001.png")
    assert dc.patient_id("slide") == lc.patient_id("slide") == "14-13412"
    ab = parse_file_name("SOB_B_A-14-22549AB-40-001.png")
    cd = parse_file_name("SOB_B_A-14-22549CD-40-001.png")
    assert ab.patient_id("slide") != cd.patient_id("slide")
    assert ab.patient_id("slide_number") == cd.patient_id("slide_number") == "14-22549"


def test_location_mismatch_names_the_disagreeing_folder():
    n = parse_file_name("SOB_B_A-14-22549AB-100-001.png")
    parts = list(n.expected_parts())
    assert location_mismatch(tuple(parts), n) is None
    parts[4] = "40X"
    assert "magnification folder is '40X'" in location_mismatch(tuple(parts), n)


# ---- tree ----------------------------------------------------------------------------------


def test_breast_root_found_in_both_layouts(tmp_path, kaggle_tree):
    breast = kaggle_tree / "BreaKHis_v1" / "BreaKHis_v1" / "histology_slides" / "breast"
    assert find_breast_root(kaggle_tree) == breast
    assert find_breast_root(kaggle_tree / "BreaKHis_v1") == breast
    assert find_breast_root(breast) == breast
    with pytest.raises(RawLayoutError, match="no histology_slides/breast"):
        find_breast_root(tmp_path)
    (tmp_path / "a" / "histology_slides" / "breast").mkdir(parents=True)
    (tmp_path / "b" / "histology_slides" / "breast").mkdir(parents=True)
    with pytest.raises(RawLayoutError, match="several BreakHis trees"):
        find_breast_root(tmp_path)


# ---- demo ----------------------------------------------------------------------------------


def test_demo_has_the_real_layout_and_the_quirks(kaggle_tree):
    breast = find_breast_root(kaggle_tree)
    assert (kaggle_tree / "Folds.csv").read_text().startswith("fold,mag,grp,filename\n")
    pngs = sorted(breast.rglob("*.png"))
    names = [parse_file_name(p.name) for p in pngs]
    for p, n in zip(pngs, names, strict=True):
        assert p.relative_to(breast).parts == n.expected_parts()
    assert {n.subtype for n in names} == set(SUBTYPES)
    assert {n.magnification for n in names} == {40, 100, 200, 400}
    folders = {n.folder for n in names}
    assert {"SOB_M_DC_14-13412", "SOB_M_LC_14-13412", "SOB_M_MC_15-190EF",
            "SOB_B_A_14-22549AB", "SOB_B_A_14-22549CD"} <= folders
    per_patient = pl.Series([n.folder for n in names]).value_counts()["count"]
    assert per_patient.n_unique() > 1  # unequal counts per patient
    img = cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (460, 700, 3) and img.dtype == np.uint8


def test_demo_is_byte_identical_for_the_same_seed(tmp_path, kaggle_tree):
    original = write_demo(tmp_path, "original")  # same seed as the fixture, other layout
    assert not (original / "Folds.csv").exists()
    kaggle = {k.removeprefix("BreaKHis_v1/"): v for k, v in digest(kaggle_tree).items()
              if k != "Folds.csv"}
    assert digest(original) == kaggle
    assert demo_module.patients(7, 3) == demo_module.patients(7, 3) != demo_module.patients(8, 3)
    style = demo_module._STYLES["DC"]
    one, two, other = (demo_module.render(np.random.default_rng(s), style, 1.0, np.zeros(3))
                       for s in (1, 1, 2))
    assert np.array_equal(one, two) and not np.array_equal(one, other)


# ---- prepare -------------------------------------------------------------------------------


def _add_bad_files(raw: Path) -> dict[str, str]:
    """Damage a copy of the demo tree; returns {relative path: expected reason category}."""
    breast = find_breast_root(raw)
    good = sorted(breast.rglob("*.png"))
    expected = {}

    def put(rel: Path, data: bytes, category: str) -> None:
        path = breast / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[path.relative_to(raw).as_posix()] = category

    benign = good[0].relative_to(breast)
    folder = benign.parent.parent
    put(folder / "40X" / benign.name.replace("-40-", "-41-").replace("-100-", "-41-"),
        good[0].read_bytes(), "bad file name")
    mag_wrong = parse_file_name(benign.name)
    other = ImageName(mag_wrong.code, mag_wrong.year, mag_wrong.slide, 400, 99)
    put(folder / "40X" / other.file_name, good[0].read_bytes(), "name/folder mismatch")
    put(Path("benign/SOB/sclerosing_adenosis/SOB_B_A_14-1/40X/SOB_B_A-14-1-40-001.png"),
        good[0].read_bytes(), "unknown subtype")
    trunc = ImageName(mag_wrong.code, mag_wrong.year, mag_wrong.slide, 40, 97)
    put(folder / "40X" / trunc.file_name, good[0].read_bytes()[:2000], "unreadable")
    put(folder / "40X" / "notes.txt", b"x", "not an image")
    put(Path("benign/SOB/adenosis") / benign.name, good[0].read_bytes(), "unexpected location")
    (raw / "readme.txt").write_text("downloaded from the mirror\n")
    expected["readme.txt"] = "unexpected location"
    expected["Folds.csv"] = "ignored"
    return expected


def test_prepare_accounts_for_every_file(tmp_path, kaggle_tree):
    raw = tmp_path / "raw"
    shutil.copytree(kaggle_tree, raw)
    expected = _add_bad_files(raw)
    n_files = sum(1 for p in raw.rglob("*") if p.is_file())
    out = tmp_path / "out"
    out.mkdir()
    breakhis_prepare.prepare(make_cfg(tmp_path, raw), out)

    rejects = pl.read_parquet(out / "rejects.parquet")
    got = {p: r.split(":")[0] for p, r in zip(rejects["path"], rejects["reason"], strict=True)}
    assert got == expected
    df, meta = read_manifest(out / "manifest.parquet")
    check_arrays(df, meta, out)
    assert len(df) + len(rejects) == n_files
    assert meta.class_names == ("benign", "malignant") and meta.layout == "CHW"
    assert np.load(out / "images.npy").shape == (len(df), 3, 32, 32)
    labels = df.select((pl.col("tumor_class") == "malignant").cast(pl.Int64) == pl.col("label"))
    assert labels.to_series().all()
    shared = df.filter(pl.col("patient_id") == "14-13412")["subtype"].unique().sort()
    assert shared.to_list() == ["ductal_carcinoma", "lobular_carcinoma"]
    assert set(df["patient_id"]) >= {"15-190EF", "14-22549AB", "14-22549CD"}
    assert (out / "contact_sheet.png").is_file()


def test_other_sizes_are_resized_and_counted(tmp_path, kaggle_tree):
    """The release has a few images that are not 700 x 460: kept, resized, counted."""
    raw = tmp_path / "raw"
    shutil.copytree(kaggle_tree, raw)
    breast = find_breast_root(raw)
    first = sorted(breast.rglob("*.png"))[0]
    name = parse_file_name(first.name)
    small = first.parent / ImageName(name.code, name.year, name.slide, name.magnification,
                                      98).file_name
    _, buf = cv2.imencode(".png", np.full((456, 700, 3), 200, np.uint8))
    small.write_bytes(buf.tobytes())
    out = tmp_path / "out"
    out.mkdir()
    breakhis_prepare.prepare(make_cfg(tmp_path, raw), out)
    report = json.loads((out / "report.json").read_text())
    source = small.relative_to(raw).as_posix()
    assert report["resized_from_other_size"] == {"count": 1, "expected": "460x700",
                                                 "files": {source: "456x700"}}
    df, _ = read_manifest(out / "manifest.parquet")
    row = df.filter(pl.col("source") == source)
    assert len(row) == 1 and report["rejected_by_reason"] == {"ignored": 1}  # Folds.csv
    image = np.load(out / "images.npy")[row["array_index"][0]]
    assert image.shape == (3, 32, 32) and (image == 200).all()


def test_subtype_task_and_magnification_filter(tmp_path, kaggle_tree):
    out = tmp_path / "out"
    out.mkdir()
    cfg = make_cfg(tmp_path, kaggle_tree, task="subtype", magnifications=["40X", "400X"],
                   patient_unit="slide_number")
    breakhis_prepare.prepare(cfg, out)
    df, meta = read_manifest(out / "manifest.parquet")
    assert meta.class_names == SUBTYPES
    assert set(df["magnification"]) == {40, 400}
    assert (df["label"] == df["subtype"].map_elements(SUBTYPES.index, pl.Int64)).all()
    assert "14-22549" in set(df["patient_id"]) and "14-22549AB" not in set(df["patient_id"])
    rejects = pl.read_parquet(out / "rejects.parquet")
    filtered = rejects.filter(pl.col("reason").str.starts_with("filtered"))
    assert len(filtered) > 0
    assert all("-100-" in p or "-200-" in p for p in filtered["path"])


def test_prepare_is_deterministic_across_worker_counts(tmp_path, kaggle_tree):
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        out.mkdir()
        breakhis_prepare.prepare(make_cfg(tmp_path, kaggle_tree, workers=workers), out)
        outs.append(out)
    for name in ("images.npy", "rejects.parquet", "contact_sheet.png"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    (df1, meta1), (df2, meta2) = (read_manifest(o / "manifest.parquet") for o in outs)
    assert df1.equals(df2)
    assert meta1.params_hash == meta2.params_hash  # `workers` changes speed, not content


def test_preprocess_one_matches_prepare(tmp_path, kaggle_tree):
    out = tmp_path / "out"
    out.mkdir()
    cfg = make_cfg(tmp_path, kaggle_tree, fit="center_crop")
    breakhis_prepare.prepare(cfg, out)
    df, _ = read_manifest(out / "manifest.parquet")
    row = df.row(3, named=True)
    arr = breakhis_prepare.preprocess_one(cfg, kaggle_tree / row["source"])
    assert arr.shape == (3, 32, 32) and arr.dtype == np.uint8
    assert np.array_equal(arr, np.load(out / "images.npy")[row["array_index"]])
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ImageError, match=re.escape(f"{bad}: unreadable")):  # the full path
        breakhis_prepare.preprocess_one(cfg, bad)
    with pytest.raises(ValueError, match="a point is not used"):
        breakhis_prepare.preprocess_one(cfg, kaggle_tree / row["source"], (0.0, 0.0, 0.0))


def test_params_are_validated_with_the_key(tmp_path):
    with pytest.raises(config.ParamsError, match=r"breakhis\.prepare.*'80X'"):
        make_cfg(tmp_path, tmp_path, magnifications=["40X", "80X"])
    with pytest.raises(config.ParamsError, match=r"breakhis\.prepare\.fit"):
        make_cfg(tmp_path, tmp_path, fit="stretch")
