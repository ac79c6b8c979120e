"""``oncopipe predict`` refuses inputs that do not belong to the dataset (exit 2, one line).

A model answers any array with confident probabilities, so the checks sit before it, in each
dataset's ``preprocess_one``: the raw release's image format and size, NIfTI for MosMed, one
DICOM series for LIDC, and a point inside the scan. No model is needed to be refused.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from oncopipe import cli, datasets

ROOT = Path(__file__).resolve().parents[1]


def image(path: Path, hw: tuple[int, int]) -> Path:
    rng = np.random.default_rng(0)
    assert cv2.imwrite(str(path), rng.integers(0, 255, (*hw, 3), dtype=np.uint8))
    return path


def refuse(capsys, tmp_path, dataset: str, path: Path, *extra: str) -> str:
    code = cli.main(["predict", dataset, str(path), "--model", str(tmp_path / "no-model"),
                     "--params", str(ROOT / "params.yaml"), *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and str(path) in err
    return err


@pytest.mark.parametrize(("dataset", "name", "hw", "words"), [
    ("pcam", "photo.jpg", (96, 96), "is a JPEG image, expected a 96x96 TIFF patch"),
    ("pcam", "big.tif", (128, 128), "wrong size: big.tif is 128x128, expected 96x96"),
    ("isic", "patch.tif", (96, 96), "is a TIFF image, expected a JPEG photograph"),
    ("isic", "renamed.jpg", (96, 96), "expected a JPEG photograph"),  # PNG bytes, .jpg name
    ("breakhis", "slide.jpg", (460, 700), "expected a PNG field of view"),
    ("mosmed", "scan.png", (64, 64), "expected a NIfTI CT study"),
])
def test_an_image_of_the_wrong_format_or_size_is_refused(capsys, tmp_path, dataset, name, hw,
                                                         words):
    path = tmp_path / name
    if name == "renamed.jpg":
        path.write_bytes(image(tmp_path / "x.png", hw).read_bytes())
    else:
        image(path, hw)
    assert words in refuse(capsys, tmp_path, dataset, path)


def test_a_non_image_is_refused_by_its_content(capsys, tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("not an image")
    assert "unreadable: notes.tif is not an image of a known format, expected a 96x96 TIFF" \
        in refuse(capsys, tmp_path, "pcam", path)


@pytest.fixture(scope="module")
def lidc_series(tmp_path_factory):
    root = tmp_path_factory.mktemp("lidc")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["lidc"]["demo"].update(n_patients=8, rows=64, n_slices=16)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    cfg = datasets.load_config("lidc", root / "params.yaml")
    datasets.spec("lidc").write_demo(cfg, root / "raw")
    return sorted({p.parent for p in (root / "raw").rglob("*.dcm")})[0]


@pytest.mark.parametrize("point", [("9999", "9999", "9999"), ("0", "0", "-500")])
def test_a_point_outside_the_scan_is_refused_with_the_extent(capsys, tmp_path, lidc_series,
                                                             point):
    err = refuse(capsys, tmp_path, "lidc", lidc_series, "--point", *point)
    assert "is outside the scan, which spans x " in err
    assert err.rstrip().endswith(" mm")


def test_a_folder_without_a_ct_series_is_refused(capsys, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    image(folder / "a.png", (8, 8))
    err = refuse(capsys, tmp_path, "lidc", folder, "--point", "0", "0", "0")
    assert "expected a folder of one CT series' DICOM slices" in err
    err = refuse(capsys, tmp_path, "lidc", folder / "a.png", "--point", "0", "0", "0")
    assert "not a folder" in err
