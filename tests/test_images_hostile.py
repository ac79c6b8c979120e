"""Hostile and out-of-range 2D images, label tables and BreakHis names.

Every size a PNG, JPEG or TIFF declares is checked before a pixel is decoded (bombs, sizes the
release never has), decoder exceptions are rejects, a JPEG trailer is legal; a CSV header
naming a column twice stops the stage, a PCam id listed with two labels is not used; BreakHis
names are ASCII and whole; ``predict`` refuses junk (1x1, blank, far off the release's size)
and warns about what it accepts but is unusual.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pytest
import yaml
from dataset_params import load_cfg
from fastapi.testclient import TestClient
from synthetic_data import SMALL_TRAIN, config_for, make_shards

from oncopipe import cli, predict
from oncopipe.core.config import ShardParams
from oncopipe.core.errors import LimitError, NotDatasetInputError
from oncopipe.core.manifest import read_manifest
from oncopipe.datasets.breakhis import prepare as breakhis_prepare
from oncopipe.datasets.breakhis.naming import (
    BreakHisNameError,
    parse_file_name,
    parse_folder_name,
)
from oncopipe.datasets.isic import demo as isic_demo
from oncopipe.datasets.isic import prepare as isic_prepare
from oncopipe.datasets.pcam import demo as pcam_demo
from oncopipe.datasets.pcam import prepare as pcam_prepare
from oncopipe.imagefiles.imagedump import Decode, load_image
from oncopipe.imagefiles.images import HeaderError, ImageError, read_header, read_rgb
from oncopipe.ingest import input_warnings
from oncopipe.ingest.rawfiles import RawLayoutError
from oncopipe.serve.app import Settings, create_app
from oncopipe.train import training

ROOT = Path(__file__).resolve().parents[1]
ANY_SIZE = Decode(size=(32, 32))  # as ISIC's prepare: any size, reduced JPEG decode
PCAM = pcam_prepare.DECODE
BREAKHIS = Decode(size=(32, 32), expect=(460, 700), off_size="resize", tolerance=0.05,
                  reduced=False)


def encode(ext: str, hw: tuple[int, int], value: int | None = None, **flags: int) -> bytes:
    """An image of ``hw`` (noise, or constant ``value``) encoded by OpenCV."""
    rgb = (np.random.default_rng(0).integers(0, 255, (*hw, 3), dtype=np.uint8) if value is None
           else np.full((*hw, 3), value, np.uint8))
    params = [v for pair in ((getattr(cv2, k), v) for k, v in flags.items()) for v in pair]
    ok, buf = cv2.imencode(ext, rgb, params)
    assert ok
    return buf.tobytes()


def png_declaring(height: int, width: int) -> bytes:
    """An 8x8 PNG whose IHDR (CRC fixed) declares ``height`` x ``width``."""
    data = bytearray(encode(".png", (8, 8)))
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def jpeg_declaring(height: int, width: int) -> bytes:
    data = bytearray(encode(".jpg", (8, 8)))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def tiff_entries(data: bytes) -> dict[int, int]:
    """tag -> offset of its 12-byte directory entry, in a little-endian TIFF."""
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    return {struct.unpack_from("<H", data, ifd + 2 + 12 * i)[0]: ifd + 2 + 12 * i
            for i in range(count)}


def tiff_declaring(height: int, width: int, compression: int = 5) -> bytes:
    """An 8x8 TIFF (LZW by default) whose directory declares ``height`` x ``width``."""
    data = bytearray(encode(".tif", (8, 8), IMWRITE_TIFF_COMPRESSION=compression))
    at = tiff_entries(bytes(data))
    for tag, value in ((256, width), (257, height)):
        struct.pack_into("<HHII", data, at[tag], tag, 4, 1, value)  # as a LONG
    return bytes(data)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------- header first


@pytest.mark.parametrize(("name", "data"), [
    ("bomb.tif", tiff_declaring(30000, 30000)),
    ("bomb.png", png_declaring(30000, 30000)),
    ("bomb.jpg", jpeg_declaring(30000, 30000)),
])
def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, name, data):
    path = write(tmp_path / name, data)
    assert read_header(path).pixels == 900_000_000
    with pytest.raises(LimitError, match=r"900,000,000 .*limits\.max_image_pixels"):
        read_rgb(path)
    for decode in (ANY_SIZE, PCAM, BREAKHIS):  # before the release's size is even looked at
        with pytest.raises(LimitError, match=f"^too large: {name} \\(30000x30000\\)"):
            load_image(path, decode)


def test_the_release_size_is_checked_before_decoding(tmp_path):
    """The pixel data is that of an 8x8 image: decoding would fail, the header answers."""
    tif = write(tmp_path / "patch.tif", tiff_declaring(128, 128))
    with pytest.raises(ImageError, match=r"^wrong size: patch\.tif is 128x128, expected 96x96$"):
        load_image(tif, PCAM)
    png = write(tmp_path / "field.png", png_declaring(2000, 3000))
    with pytest.raises(ImageError, match=r"^wrong size: field\.png is 2000x3000, expected "
                                         r"460x700 \(or within 5% of it\)$"):
        load_image(png, BREAKHIS)


def test_breakhis_sizes_near_the_release_are_resized_far_ones_rejected(tmp_path):
    near = write(tmp_path / "near.png", encode(".png", (456, 700)))
    assert load_image(near, BREAKHIS).shape == (3, 32, 32)
    far = write(tmp_path / "far.png", encode(".png", (400, 700)))
    with pytest.raises(ImageError, match="wrong size: far.png is 400x700"):
        load_image(far, BREAKHIS)


def test_opencvs_own_pixel_limit_is_a_reject_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setenv("ONCOPIPE_LIMITS", json.dumps({"max_image_pixels": 2**31}))
    path = write(tmp_path / "huge.png", png_declaring(40000, 30000))  # over OpenCV's 2^30
    with pytest.raises(ImageError, match=r"huge\.png: image decoding failed \(error: "):
        read_rgb(path)
    with pytest.raises(ImageError, match=r"^unreadable: huge\.png"):
        load_image(path, ANY_SIZE)


def _tiff_with(edit) -> bytes:
    data = bytearray(encode(".tif", (8, 8), IMWRITE_TIFF_COMPRESSION=1))
    edit(data, tiff_entries(bytes(data)))
    return bytes(data)


@pytest.mark.parametrize(("edit", "words"), [
    (lambda d, at: struct.pack_into("<I", d, 4, 10**9), "directory offset 1000000000 outside"),
    (lambda d, at: struct.pack_into("<H", d, struct.unpack_from("<I", d, 4)[0], 60000),
     "directory of 60000 entries runs past the end"),
    (lambda d, at: struct.pack_into("<I", d, at[258] + 8, 2**31), "tag 258 points past the end"),
    (lambda d, at: struct.pack_into("<HHII", d, at[277], 277, 3, 1, 40), "40 samples"),
    (lambda d, at: struct.pack_into("<HHII", d, at[256], 256, 2, 1, 8), "not an integer"),
    (lambda d, at: struct.pack_into("<HHII", d, at[257], 257, 4, 1, 5000),
     "uncompressed TIFF declares 120,000 bytes of pixels but the file holds"),
])
def test_tiff_directory_fields_are_checked_against_the_file(tmp_path, edit, words):
    path = write(tmp_path / "x.tif", _tiff_with(edit))
    with pytest.raises(HeaderError, match=words):
        read_header(path)
    with pytest.raises(ImageError, match=f"^unreadable: x.tif: .*{words}"):
        load_image(path, ANY_SIZE)


def test_a_jpeg_segment_length_below_two_does_not_loop(tmp_path):
    data = bytearray(encode(".jpg", (40, 60)))
    app0 = data.index(b"\xff\xe0")
    struct.pack_into(">H", data, app0 + 2, 0)  # the old walk seeked back here forever
    path = write(tmp_path / "zero.jpg", bytes(data))
    try:
        read_header(path)
    except HeaderError as exc:
        assert "zero.jpg" in str(exc)


def test_only_png_jpeg_and_tiff_are_decoded(tmp_path):
    """OpenCV decodes BMP, PNM, WebP... each a small file that may declare a huge image."""
    path = write(tmp_path / "photo.jpg", encode(".bmp", (300, 400)))
    with pytest.raises(ImageError, match="not a JPEG, PNG or TIFF image"):
        read_rgb(path)
    with pytest.raises(ImageError, match="^unreadable: photo.jpg"):
        load_image(path, ANY_SIZE)


def test_bytes_after_the_jpeg_end_marker_are_accepted(tmp_path):
    plain = encode(".jpg", (480, 640))
    clean = write(tmp_path / "clean.jpg", plain)
    trailer = write(tmp_path / "trailer.jpg", plain + np.random.default_rng(1).bytes(65536))
    assert np.array_equal(load_image(trailer, ANY_SIZE), load_image(clean, ANY_SIZE))


def test_a_cut_jpeg_is_truncated_even_with_an_end_marker_in_its_thumbnail(tmp_path):
    plain = encode(".jpg", (480, 640))
    thumbnail = encode(".jpg", (16, 16))  # EXIF thumbnails are whole JPEGs, end marker too
    app1 = b"\xff\xe1" + (len(thumbnail) + 8).to_bytes(2, "big") + b"Exif\0\0" + thumbnail
    data = plain[:2] + app1 + plain[2:]
    cut = write(tmp_path / "cut.jpg", data[: len(data) // 2])
    with pytest.raises(ImageError, match="^truncated: cut.jpg has no JPEG end-of-image marker"):
        load_image(cut, ANY_SIZE)
    whole = write(tmp_path / "whole.jpg", data)
    assert load_image(whole, ANY_SIZE).shape == (3, 32, 32)


# ------------------------------------------------------------------------------- labels


def _prepare(tmp: Path, name: str, raw: Path, module, **prepare) -> tuple[pl.DataFrame, dict,
                                                                          pl.DataFrame]:
    cfg = load_cfg(tmp, name, {"raw": str(raw), "task": "binary",
                               "prepare": {"workers": 1, **prepare}})
    out = tmp / f"out-{name}"
    out.mkdir()
    module.prepare(cfg, out)
    df, _ = read_manifest(out / "manifest.parquet")
    return df, json.loads((out / "report.json").read_text()), pl.read_parquet(
        out / "rejects.parquet")


@pytest.fixture(scope="module")
def pcam_raw(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pcam")
    cfg = load_cfg(tmp, "pcam", {"raw": str(tmp / "raw"), "task": "binary",
                                 "demo": {"seed": 3, "n_train": 12, "n_test": 0}})
    pcam_demo.write_demo(cfg, tmp / "raw")
    return tmp / "raw"


def test_a_pcam_id_with_two_labels_is_not_used(tmp_path, pcam_raw):
    raw = tmp_path / "raw"
    shutil.copytree(pcam_raw, raw)
    lines = (raw / "train_labels.csv").read_text().splitlines()
    disputed, label = lines[1].split(",")
    repeated = lines[2]
    flipped = f"{disputed},{1 - int(label)}"
    (raw / "train_labels.csv").write_text("\n".join([*lines, flipped, repeated]) + "\n")
    df, report, rejects = _prepare(tmp_path, "pcam", raw, pcam_prepare)
    reasons = dict(rejects.select("path", "reason").iter_rows())
    n = len(lines)
    assert reasons[f"train_labels.csv:{n + 1}"].startswith(
        f"conflicting labels: id {disputed} is '{1 - int(label)}' on line {n + 1} but "
        f"'{label}' on line 2")
    assert reasons[f"train/{disputed}.tif"].startswith("conflicting labels: ")
    assert reasons[f"train_labels.csv:{n + 2}"].startswith("duplicate row: ")  # identical
    assert disputed not in set(df["sample_id"])
    assert repeated.split(",")[0] in set(df["sample_id"])
    assert report["kept"] + report["rejected"] == report["read"]


def test_a_csv_header_naming_a_column_twice_stops_the_stage(tmp_path):
    """An ISIC train.csv with ``target`` twice kept the last and relabelled every image."""
    raw = tmp_path / "raw"
    cfg = load_cfg(tmp_path, "isic", {
        "raw": str(raw), "task": "binary",
        "demo": {"seed": 5, "n_patients": 2, "images_per_patient": [1, 2], "n_test": 0,
                 "large_images": 0, "duplicates": 0}})
    isic_demo.write_demo(cfg, raw)
    lines = (raw / "train.csv").read_text().splitlines()
    (raw / "train.csv").write_text("\n".join([lines[0] + ",target"]
                                             + [line + ",0" for line in lines[1:]]) + "\n")
    with pytest.raises(RawLayoutError, match=f"^{raw / 'train.csv'}: column 'target' "
                                             "appears 2 times in the header"):
        _prepare(tmp_path, "isic", raw, isic_prepare, size=32)


# ------------------------------------------------------------------------ BreakHis names


@pytest.mark.parametrize("name", [
    "SOB_B_A-14-22549AB-40-00\u0663.png",  # an Arabic-Indic three
    "SOB_B_A-\uff11\uff14-22549AB-40-001.png",  # full-width 14
    "SOB_B_A-14-22549AB-40-001.png\n",
    "SOB_B_A-14-22549AB-" + "4" * 5000 + "-001.png",  # int() of it would raise ValueError
    "SOB_B_A-14-22549AB-040-001.png",
])
def test_file_names_are_ascii_and_matched_whole(name):
    with pytest.raises(BreakHisNameError):
        parse_file_name(name)


@pytest.mark.parametrize("name", ["SOB_B_A_14-22549AB\n", "SOB_B_A_\u0661\u0664-22549AB"])
def test_folder_names_are_ascii_and_matched_whole(name):
    with pytest.raises(BreakHisNameError):
        parse_folder_name(name)


# --------------------------------------------------------------------- predict: junk, warnings


def refuse(capsys, dataset: str, path: Path, params: Path = ROOT / "params.yaml") -> str:
    code = cli.main(["predict", dataset, str(path), "--model", str(path.parent / "no-model"),
                     "--params", str(params)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith(f"predict: {path}: ")
    return err


@pytest.mark.parametrize(("dataset", "name", "data", "words"), [
    ("breakhis", "dot.png", encode(".png", (1, 1), 0),
     "wrong size: dot.png is 1x1, expected 460x700 (or within 5% of it)"),
    ("breakhis", "far.png", encode(".png", (600, 700)), "wrong size: far.png is 600x700"),
    ("breakhis", "blank.png", encode(".png", (460, 700), 255), "blank: blank.png has"),
    ("isic", "dot.jpg", encode(".jpg", (1, 1), 0),
     "too small: dot.jpg is 1x1 pixels, expected a JPEG photograph as in jpeg/train/ "
     "(at least 256 pixels on the shorter side)"),
    ("isic", "black.jpg", encode(".jpg", (480, 640), 0), "blank: black.jpg has (nearly) the "
     "same value in every pixel, expected a JPEG photograph"),
    ("pcam", "black.tif", encode(".tif", (96, 96), 0), "blank: black.tif"),
])
def test_junk_is_refused_with_what_was_expected(capsys, tmp_path, dataset, name, data, words):
    assert words in refuse(capsys, dataset, write(tmp_path / name, data))


def test_junk_is_not_the_datasets_input(tmp_path):
    params = ROOT / "params.yaml"
    cfg = load_cfg(tmp_path, "breakhis", yaml.safe_load(params.read_text())["breakhis"])
    with pytest.raises(NotDatasetInputError, match="wrong size"):
        breakhis_prepare.preprocess_one(cfg, write(tmp_path / "d.png", encode(".png", (1, 1))))
    with pytest.raises(NotDatasetInputError, match="blank"):
        breakhis_prepare.preprocess_one(cfg, write(tmp_path / "b.png",
                                                   encode(".png", (460, 700), 7)))
    with input_warnings.collecting() as warnings:
        breakhis_prepare.preprocess_one(cfg, write(tmp_path / "n.png",
                                                   encode(".png", (456, 700))))
    assert warnings == ["n.png is 456x700, not the release's 460x700; resized as prepare "
                        "resizes the release's few such images"]


@pytest.fixture(scope="module")
def breakhis_model(tmp_path_factory) -> tuple[Path, Path]:
    """A model for BreakHis's prepared layout at 32x32, and params that prepare at 32."""
    root = tmp_path_factory.mktemp("model")
    shards = make_shards(root, ShardParams(shard_size=16), patients_per_class=(6, 6),
                         samples_per_patient=1, size=32, channels=3)
    p = dataclasses.replace(SMALL_TRAIN, model="lenet5", epochs=1)
    training.train(config_for(p), shards, root / "models" / "breakhis", root / "live")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["breakhis"]["prepare"]["image_size"] = 32
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root / "models" / "breakhis", root / "params.yaml"


def test_an_unusual_input_is_answered_with_a_visible_warning(capsys, tmp_path, breakhis_model):
    model, params = breakhis_model
    argv = ["predict", "breakhis", "--model", str(model), "--params", str(params)]
    near = write(tmp_path / "near.png", encode(".png", (456, 700)))
    usual = write(tmp_path / "usual.png", encode(".png", (460, 700)))
    assert cli.main([*argv[:2], str(near), *argv[2:], "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["warnings"]) == 1 and "near.png is 456x700" in result["warnings"][0]
    assert cli.main([*argv[:2], str(near), *argv[2:]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{near}: ") and lines[1] == f"warning: {result['warnings'][0]}"
    assert cli.main([*argv[:2], str(usual), *argv[2:], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == []


@pytest.mark.parametrize(("p", "shown"), [(1.0, ">99.9%"), (0.99951, ">99.9%"),
                                          (0.9994, "99.9%"), (0.5, "50.0%"),
                                          (0.0005, "0.1%"), (0.00049, "<0.1%"), (0.0, "<0.1%")])
def test_probabilities_in_words_are_never_certain(p, shown):
    assert predict.percent(p) == shown
    words = predict.in_words({"probabilities": {"malignant": p, "benign": 1 - p}})
    assert f"{shown} malignant" in words and "100.0%" not in words and " 0.0%" not in words


def test_the_web_api_refuses_junk_and_carries_the_warning(tmp_path, breakhis_model):
    """``oncopipe serve`` runs the same preprocessing: the same refusals, the same warnings."""
    model, params = breakhis_model
    app = create_app(Settings(root=tmp_path, params=params, models=model.parent))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        def post(route: str, name: str, data: bytes):
            return client.post(route, files={"file": (name, data)})

        dot = post("/api/predict/breakhis", "dot.png", encode(".png", (1, 1), 0))
        assert dot.status_code == 422
        assert "wrong size: dot.png is 1x1, expected 460x700" in dot.json()["error"]
        blank = post("/api/predict/breakhis", "b.png", encode(".png", (460, 700), 255))
        assert blank.status_code == 422 and "blank: b.png" in blank.json()["error"]
        near = post("/api/predict/breakhis", "near.png", encode(".png", (456, 700)))
        assert near.status_code == 200
        assert [w.split(",")[0] for w in near.json()["warnings"]] == [
            "near.png is 456x700"]
        explained = post("/api/explain/breakhis", "near.png", encode(".png", (456, 700)))
        assert explained.json()["result"]["warnings"] == near.json()["warnings"]
        assert "100.0%" not in explained.json()["words"]
