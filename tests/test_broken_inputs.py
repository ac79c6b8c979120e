"""Broken inputs planted into copies of small demo downloads, each through the whole prepare.

Every case ends one of three ways, and the test says which:

- ``SetAside``: the stage finishes; the file is in ``rejects.parquet`` under its own path with
  the expected reason, is not in the manifest, and kept + rejected = read;
- ``Kept``: an odd but valid input is read (and whatever it needs is noted in the report);
- ``Stops``: the raw layout itself is wrong; the stage stops with one line naming the file
  and what to fix (a :class:`~oncopipe.ingest.rawfiles.RawLayoutError`; exit status 2 and no
  traceback from ``python -m stages.prepare``, checked once per dataset below).

PCam, ISIC, BreakHis and MosMedData; the LIDC cases live with the DICOM corpus.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import polars as pl
import pytest
import yaml

from oncopipe import datasets
from oncopipe.core.manifest import read_manifest
from oncopipe.ingest.rawfiles import RawLayoutError

REPO = Path(__file__).resolve().parents[1]
XLSX = Path(__file__).parent / "data" / "mosmed_registry.xlsx"  # written by openpyxl 3.1.5
SECTIONS = {
    "pcam": {"demo": {"seed": 3, "n_train": 30, "n_test": 3}, "prepare": {"workers": 1}},
    "isic": {"demo": {"seed": 5, "n_patients": 8, "images_per_patient": [2, 4], "n_test": 2,
                      "large_images": 0, "duplicates": 1, "malignant_fraction": 0.3},
             "prepare": {"size": 32, "workers": 1}},
    "breakhis": {"demo": {"seed": 7, "patients_per_subtype": 2,
                          "images_per_magnification": [1, 2]},
                 "prepare": {"image_size": 32, "magnifications": ["40X"], "workers": 1}},
    "mosmed": {"demo": {"seed": 7, "studies": [4, 3, 2, 1, 1], "masks": 2, "size": 32,
                        "slices": [8, 10]},
               "prepare": {"shape": [8, 16, 16], "workers": 1}},
}


@dataclass(frozen=True)
class SetAside:
    path: str  # relative to the raw root, as the rejects table names it
    reason: str  # the start of the reason
    first_kept: bool = False  # a repeated registry row: the first listing stays in


@dataclass(frozen=True)
class Kept:
    check: Callable[[pl.DataFrame, dict], None]  # (manifest, report) -> asserts


@dataclass(frozen=True)
class Stops:
    file: str  # relative to the raw root: the message names it
    fix: str  # words of the message that say what is wrong or what to do


Plant = Callable[[Path, list[str]], "SetAside | Kept | Stops"]  # (raw copy, kept sources)


def params_file(tmp: Path, name: str, raw: Path) -> Path:
    path = tmp / f"params-{name}.yaml"
    section = {"raw": str(raw), "task": "binary", **SECTIONS[name]}
    path.write_text(yaml.safe_dump({"seed": 1, "datasets": [name], name: section}))
    return path


def prepare(tmp: Path, name: str, raw: Path) -> Path:
    out = tmp / f"out-{name}"
    out.mkdir()
    cfg = datasets.load_config(name, params_file(tmp, name, raw))
    datasets.spec(name).prepare(cfg, out)
    return out


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> dict[str, tuple[Path, list[str]]]:
    """name -> (demo raw folder, sources the clean demo keeps), made once per module."""
    made = {}
    for name in SECTIONS:
        tmp = tmp_path_factory.mktemp(name)
        raw = tmp / "raw"
        raw.mkdir()
        datasets.spec(name).write_demo(
            datasets.load_config(name, params_file(tmp, name, raw)), raw)
        df, _ = read_manifest(prepare(tmp, name, raw) / "manifest.parquet")
        made[name] = (raw, sorted(df["source"]))
    return made


# ------------------------------------------------------------------------ planted damage


def _bytes_of(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def zero_bytes(raw: Path, kept: list[str], reason: str, index: int = 0) -> SetAside:
    _bytes_of(raw / kept[index], b"")
    return SetAside(kept[index], reason)


def truncated(raw: Path, kept: list[str], reason: str, index: int = 1) -> SetAside:
    data = (raw / kept[index]).read_bytes()
    _bytes_of(raw / kept[index], data[: len(data) // 2])
    return SetAside(kept[index], reason)


def text_as_image(raw: Path, kept: list[str], index: int = 2) -> SetAside:
    _bytes_of(raw / kept[index], b"<html>404 Not Found</html>\n")
    return SetAside(kept[index], "unreadable")


def image_of_size(raw: Path, rel: str, height: int, width: int) -> None:
    ext = Path(rel).suffix
    ok, buf = cv2.imencode(ext, np.full((height, width, 3), 180, np.uint8))
    assert ok
    _bytes_of(raw / rel, buf.tobytes())


def symlink_loop_beside(raw: Path, kept: list[str]) -> SetAside:
    folder = (raw / kept[0]).parent
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    return SetAside(Path(kept[0]).parent.joinpath("loop").as_posix(), "symlink loop")


def self_link_beside(raw: Path, kept: list[str]) -> SetAside:
    link = (raw / kept[0]).with_name("self" + Path(kept[0]).suffix)
    link.symlink_to(link.name)
    return SetAside(link.relative_to(raw).as_posix(), "symlink loop")


def broken_link_beside(raw: Path, kept: list[str]) -> SetAside:
    link = (raw / kept[0]).with_name("gone" + Path(kept[0]).suffix)
    link.symlink_to(raw / "nowhere" / "x")
    return SetAside(link.relative_to(raw).as_posix(), "broken symlink")


def csv_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8-sig").splitlines()


def write_lines(path: Path, lines: list[str], encoding: str = "utf-8") -> None:
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))


def non_utf8_row(raw: Path, csv_name: str, line: int, column: int, text: str) -> Stops:
    """Re-save the CSV as a spreadsheet might, in cp1252, with one non-ASCII cell."""
    lines = csv_lines(raw / csv_name)
    fields = lines[line - 1].split(",")
    fields[column] = text
    lines[line - 1] = ",".join(fields)
    write_lines(raw / csv_name, lines, "cp1252")
    byte = next(b for b in text.encode("cp1252") if b > 127)
    return Stops(csv_name, f"not UTF-8 text (byte 0x{byte:02x} at line {line}")


def duplicate_row(raw: Path, csv_name: str, line: int) -> SetAside:
    lines = csv_lines(raw / csv_name)
    write_lines(raw / csv_name, [*lines, lines[line - 1]])
    return SetAside(f"{csv_name}:{len(lines) + 1}", "duplicate row")


# PCam ----------------------------------------------------------------------------------------


def pcam_wrong_size(raw, kept):
    image_of_size(raw, kept[3], 64, 64)
    return SetAside(kept[3], "wrong size")


def pcam_missing_file(raw, kept):
    (raw / kept[4]).unlink()
    return SetAside(kept[4], "file missing")


def pcam_unknown_label(raw, kept):
    lines = csv_lines(raw / "train_labels.csv")
    image_id = Path(kept[5]).stem
    lines = [f"{image_id},2" if line.startswith(image_id + ",") else line for line in lines]
    write_lines(raw / "train_labels.csv", lines)
    return SetAside(kept[5], "unknown label")


def pcam_no_csv_row(raw, kept):
    lines = csv_lines(raw / "train_labels.csv")
    image_id = Path(kept[6]).stem
    write_lines(raw / "train_labels.csv", [x for x in lines if not x.startswith(image_id)])
    return SetAside(kept[6], "missing from CSV")


def pcam_bad_header(raw, kept):
    lines = csv_lines(raw / "train_labels.csv")
    write_lines(raw / "train_labels.csv", ["image,target", *lines[1:]])
    return Stops("train_labels.csv", "header must be 'id,label'")


# ISIC ----------------------------------------------------------------------------------------


def isic_corrupt_scan_data(raw, kept):
    """4 KiB of garbage inside the entropy-coded data; the end marker is intact, so only the
    decoder's own warning can tell (OpenCV returns the image, partly grey)."""
    path = raw / kept[0]
    _, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (480, 640, 3),
                                                                      dtype=np.uint8))
    data = bytearray(buf.tobytes())
    sos = data.index(b"\xff\xda")
    middle = sos + (len(data) - sos) // 3
    data[middle:middle + 4096] = np.random.default_rng(1).integers(0, 256, 4096,
                                                                   dtype=np.uint8).tobytes()
    assert data.endswith(b"\xff\xd9")
    _bytes_of(path, bytes(data))
    return SetAside(kept[0], "corrupt")


def isic_bad_age(raw, kept):
    lines = csv_lines(raw / "train.csv")
    name = Path(kept[1]).stem
    number = next(i for i, line in enumerate(lines) if line.startswith(name + ","))
    fields = lines[number].split(",")
    fields[3] = "abc"
    lines[number] = ",".join(fields)
    write_lines(raw / "train.csv", lines)

    def check(df: pl.DataFrame, report: dict) -> None:
        row = df.filter(pl.col("sample_id") == name)
        assert len(row) == 1 and row["age_approx"][0] is None
        assert report["bad_optional_cells"] == [
            f"train.csv:{number + 1}: age_approx 'abc' is not an age in years; stored as null"]
    return Kept(check)


def isic_missing_file(raw, kept):
    (raw / kept[2]).unlink()
    return SetAside(kept[2], "file missing")


def isic_inconsistent_label(raw, kept):
    lines = csv_lines(raw / "train.csv")
    name = Path(kept[3]).stem
    number = next(i for i, line in enumerate(lines) if line.startswith(name + ","))
    fields = lines[number].split(",")
    fields[6] = "benign" if fields[7] == "1" else "malignant"
    lines[number] = ",".join(fields)
    write_lines(raw / "train.csv", lines)
    return SetAside(kept[3], "inconsistent label")


def isic_missing_column(raw, kept):
    lines = csv_lines(raw / "train.csv")
    write_lines(raw / "train.csv", [lines[0].replace("patient_id", "patient"), *lines[1:]])
    return Stops("train.csv", "missing column(s) ['patient_id']")


def isic_png_named_jpg(raw, kept):
    """A PNG saved with a .jpg name is still an image: read by its content, kept."""
    _, buf = cv2.imencode(".png", np.full((300, 400, 3), 90, np.uint8))
    _bytes_of(raw / kept[4], buf.tobytes())

    def check(df: pl.DataFrame, report: dict) -> None:
        assert kept[4] in set(df["source"])
    return Kept(check)


# BreakHis ------------------------------------------------------------------------------------


def breakhis_other_size(raw, kept):
    image_of_size(raw, kept[3], 456, 700)

    def check(df: pl.DataFrame, report: dict) -> None:
        assert kept[3] in set(df["source"])
        assert report["resized_from_other_size"]["files"] == {kept[3]: "456x700"}
    return Kept(check)


def breakhis_misplaced(raw, kept):
    src = raw / kept[4]
    dest = src.parent.parent / "100X" / src.name
    dest.parent.mkdir(exist_ok=True)
    shutil.move(src, dest)
    return SetAside(dest.relative_to(raw).as_posix(), "name/folder mismatch")


def breakhis_no_tree(raw, kept):
    shutil.rmtree(raw / "BreaKHis_v1")
    (raw / "readme.txt").write_text("the archive did not unpack\n")
    return Stops(".", "no histology_slides/breast folder")


# MosMedData ----------------------------------------------------------------------------------


def _rewrite_volume(raw: Path, rel: str, change: Callable[[np.ndarray], np.ndarray]) -> None:
    img = nib.load(raw / rel)
    data = change(np.asarray(img.dataobj))
    out = nib.Nifti1Image(data, img.affine)
    out.header.set_data_dtype(data.dtype)
    (raw / rel).unlink()
    (raw / rel).write_bytes(gzip.compress(out.to_bytes(), mtime=0))


def mosmed_value(value: float) -> Plant:
    def plant(raw, kept):
        def change(a):
            a = a.astype(np.float32)
            a[a.shape[0] // 2, a.shape[1] // 2, 0] = value
            return a
        _rewrite_volume(raw, kept[0], change)
        return SetAside(kept[0], "unreadable")
    return plant


def mosmed_complex(raw, kept):
    _rewrite_volume(raw, kept[1], lambda a: a.astype(np.complex64) * (1 + 1j))
    return SetAside(kept[1], "unreadable")


def mosmed_zero_bytes(raw, kept):
    return zero_bytes(raw, kept, "unreadable", index=2)


def mosmed_truncated(raw, kept):
    return truncated(raw, kept, "unreadable", index=3)


def mosmed_duplicate_row(raw, kept):
    lines = csv_lines(raw / "dataset_registry.csv")
    write_lines(raw / "dataset_registry.csv", [*lines, lines[1]], "utf-8-sig")
    return SetAside(lines[1].split(",")[2].lstrip("/"), "duplicate study", first_kept=True)


def mosmed_listed_missing(raw, kept):
    (raw / kept[4]).unlink()
    return SetAside(kept[4], "missing")


def mosmed_unlisted(raw, kept):
    lines = csv_lines(raw / "dataset_registry.csv")
    write_lines(raw / "dataset_registry.csv",
                [x for x in lines if kept[5] not in x], "utf-8-sig")
    return SetAside(kept[5], "unlisted")


def mosmed_missing_column(raw, kept):
    lines = csv_lines(raw / "dataset_registry.csv")
    write_lines(raw / "dataset_registry.csv",
                [lines[0].replace("category", "class"), *lines[1:]], "utf-8-sig")
    return Stops("dataset_registry.csv", "missing column(s) ['category']")


def mosmed_xlsx_only(raw, kept):
    """The registry as the release's .xlsx, no CSV: the same studies, read from the sheet."""
    csv_rows = csv_lines(raw / "dataset_registry.csv")
    (raw / "dataset_registry.csv").unlink()
    shutil.copy(XLSX, raw / "dataset_registry.xlsx")

    def check(df: pl.DataFrame, report: dict) -> None:
        assert report["registry"] == "dataset_registry.xlsx" and report["rejected"] == 0
        assert sorted(df["source"]) == sorted(r.split(",")[2].lstrip("/") for r in csv_rows[1:])
        assert dict(zip(df["source"], df["mask_file"], strict=True)) == {
            r.split(",")[2].lstrip("/"): r.split(",")[3].lstrip("/") for r in csv_rows[1:]}
    return Kept(check)


def mosmed_stray_file(raw, kept):
    (raw / "studies" / "CT-0" / "notes.txt").write_text("checked by Dr. X\n")

    def check(df: pl.DataFrame, report: dict) -> None:
        assert report["other_files"] == ["studies/CT-0/notes.txt"]
    return Kept(check)


CASES: dict[str, tuple[str, Plant]] = {
    "pcam-zero-byte": ("pcam", lambda r, k: zero_bytes(r, k, "unreadable")),
    "pcam-truncated": ("pcam", lambda r, k: truncated(r, k, "unreadable")),
    "pcam-text-as-tif": ("pcam", text_as_image),
    "pcam-wrong-size": ("pcam", pcam_wrong_size),
    "pcam-missing-file": ("pcam", pcam_missing_file),
    "pcam-unknown-label": ("pcam", pcam_unknown_label),
    "pcam-no-csv-row": ("pcam", pcam_no_csv_row),
    "pcam-duplicate-row": ("pcam", lambda r, k: duplicate_row(r, "train_labels.csv", 2)),
    "pcam-non-utf8-csv": ("pcam", lambda r, k: non_utf8_row(r, "train_labels.csv", 5, 1,
                                                            "n\u00e9g")),
    "pcam-bad-header": ("pcam", pcam_bad_header),
    "pcam-symlink-loop": ("pcam", symlink_loop_beside),
    "pcam-self-link": ("pcam", self_link_beside),
    "pcam-broken-link": ("pcam", broken_link_beside),
    "isic-corrupt-scan-data": ("isic", isic_corrupt_scan_data),
    "isic-truncated": ("isic", lambda r, k: truncated(r, k, "truncated")),
    "isic-zero-byte": ("isic", lambda r, k: zero_bytes(r, k, "truncated", index=5)),
    "isic-bad-age": ("isic", isic_bad_age),
    "isic-missing-file": ("isic", isic_missing_file),
    "isic-inconsistent-label": ("isic", isic_inconsistent_label),
    "isic-duplicate-row": ("isic", lambda r, k: duplicate_row(r, "train.csv", 3)),
    "isic-non-utf8-csv": ("isic", lambda r, k: non_utf8_row(r, "train.csv", 4, 4,
                                                            "t\u00eate")),
    "isic-missing-column": ("isic", isic_missing_column),
    "isic-png-named-jpg": ("isic", isic_png_named_jpg),
    "isic-broken-link": ("isic", broken_link_beside),
    "breakhis-zero-byte": ("breakhis", lambda r, k: zero_bytes(r, k, "unreadable")),
    "breakhis-truncated": ("breakhis", lambda r, k: truncated(r, k, "unreadable")),
    "breakhis-text-as-png": ("breakhis", text_as_image),
    "breakhis-other-size": ("breakhis", breakhis_other_size),
    "breakhis-misplaced": ("breakhis", breakhis_misplaced),
    "breakhis-symlink-loop": ("breakhis", symlink_loop_beside),
    "breakhis-no-tree": ("breakhis", breakhis_no_tree),
    "mosmed-inf-voxel": ("mosmed", mosmed_value(np.inf)),
    "mosmed-minus-inf-voxel": ("mosmed", mosmed_value(-np.inf)),
    "mosmed-nan-voxel": ("mosmed", mosmed_value(np.nan)),
    "mosmed-complex": ("mosmed", mosmed_complex),
    "mosmed-zero-byte": ("mosmed", mosmed_zero_bytes),
    "mosmed-truncated": ("mosmed", mosmed_truncated),
    "mosmed-duplicate-row": ("mosmed", mosmed_duplicate_row),
    "mosmed-listed-missing": ("mosmed", mosmed_listed_missing),
    "mosmed-unlisted": ("mosmed", mosmed_unlisted),
    "mosmed-non-utf8-registry": ("mosmed", lambda r, k: non_utf8_row(
        r, "dataset_registry.csv", 3, 3, "/masks/\u00e9tude.nii.gz")),
    "mosmed-missing-column": ("mosmed", mosmed_missing_column),
    "mosmed-xlsx-registry": ("mosmed", mosmed_xlsx_only),
    "mosmed-stray-file": ("mosmed", mosmed_stray_file),
    "mosmed-symlink-loop": ("mosmed", symlink_loop_beside),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_input(case, demos, tmp_path):
    name, plant = CASES[case]
    demo_raw, kept = demos[name]
    raw = tmp_path / "raw"
    shutil.copytree(demo_raw, raw, symlinks=True)
    expect = plant(raw, kept)

    if isinstance(expect, Stops):
        with pytest.raises(RawLayoutError) as info:
            prepare(tmp_path, name, raw)
        message = str(info.value)
        assert "\n" not in message
        assert str(raw / expect.file) in message and expect.fix in message
        return

    out = prepare(tmp_path, name, raw)
    df, _ = read_manifest(out / "manifest.parquet")
    report = json.loads((out / "report.json").read_text())
    rejects = pl.read_parquet(out / "rejects.parquet")
    assert report["kept"] == len(df) and report["rejected"] == len(rejects)
    assert report["kept"] + report["rejected"] == report["read"]
    if isinstance(expect, Kept):
        expect.check(df, report)
        return
    reasons = [r for p, r in rejects.select("path", "reason").iter_rows() if p == expect.path]
    assert reasons, f"{expect.path} not in rejects: {rejects.to_dicts()}"
    assert reasons[0].startswith(expect.reason), reasons
    assert (expect.path in set(df["source"])) == expect.first_kept


# ------------------------------------------------------ the stage itself: one line, exit 2


STAGE_STOPS = {"pcam": pcam_bad_header, "isic": isic_missing_column,
               "breakhis": breakhis_no_tree,
               "mosmed": lambda r, k: non_utf8_row(r, "dataset_registry.csv", 2, 1, "CT-\u00f8")}


@pytest.mark.parametrize("name", sorted(STAGE_STOPS))
def test_stage_stops_with_one_line(name, demos, tmp_path):
    demo_raw, kept = demos[name]
    raw = tmp_path / "raw"
    shutil.copytree(demo_raw, raw, symlinks=True)
    expect = STAGE_STOPS[name](raw, kept)
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(params_file(tmp_path, name, raw), project / "params.yaml")
    run = subprocess.run([sys.executable, "-m", "stages.prepare", name], cwd=project,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    problems = [line for line in run.stderr.splitlines() if line.startswith("prepare: ")]
    assert len(problems) == 1 and "Traceback" not in run.stderr, run.stderr
    assert expect.fix in problems[0]
    assert not (project / "data" / "prepared" / name).exists()
    assert not [p for p in (project / "data" / "prepared").iterdir()]  # no scratch left
