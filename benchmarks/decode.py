"""Image decoding per dataset: the pipeline's ``preprocess_one`` against PIL and plain OpenCV.

Each dataset's demo generator writes its raw layout into the benchmark's scratch folder; the
image files are then decoded to the size ``prepare`` stores, page cache warm, by:

- ``oncopipe``: the dataset's ``preprocess_one`` (exactly what ``prepare`` runs per file:
  OpenCV, JPEG decoded at 1/2, 1/4 or 1/8 scale where the output size allows, area resize);
- ``PIL``: ``Image.open`` with ``Image.draft`` for JPEG (PIL's own reduced-scale decode, the
  fair baseline), ``convert("RGB")``, bilinear ``resize`` (antialiased when shrinking);
- ``cv2``: a full ``imread`` + ``cvtColor`` + ``INTER_AREA`` resize, i.e. ours without the
  reduced-scale decode.

Outputs are checked by their mean absolute difference from ours in grey levels (different
resampling filters cannot agree exactly).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from benchmarks.harness import Comparison, Method, same_array
from oncopipe import datasets
from oncopipe.imagefiles.images import image_size

SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png")
LARGE_SIDE = 2000
MEAN_ABS_GREY = 4.0  # agreement: mean |difference| from ours, in grey levels of 255


def image_files(root: Path, limit: int) -> list[Path]:
    """Up to ``limit`` image files under ``root``, evenly spread over the sorted listing."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    if len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).astype(int)]
    return files


def _crop_box(w: int, h: int) -> tuple[int, int, int, int]:
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return left, top, left + side, top + side


def pil_decode(path: Path, height: int, width: int, fit: str) -> np.ndarray:
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("RGB", (width, height))  # scale chosen so the result is >= the request
        rgb = img.convert("RGB")
    if fit == "center_crop":
        rgb = rgb.crop(_crop_box(*rgb.size))
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(rgb).transpose(2, 0, 1)


def cv2_decode(path: Path, height: int, width: int, fit: str) -> np.ndarray:
    img = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    if fit == "center_crop":
        left, top, right, bottom = _crop_box(img.shape[1], img.shape[0])
        img = img[top:bottom, left:right]
    if img.shape[:2] != (height, width):
        interp = cv2.INTER_AREA if img.shape[0] >= height else cv2.INTER_LINEAR
        img = cv2.resize(img, (width, height), interpolation=interp)
    return img.transpose(2, 0, 1)


def _config(name: str, work: Path, demo: dict, prepare: dict):
    cfg = datasets.load_config(name)
    cfg = dataclasses.replace(cfg, raw=work / name,
                              demo=dataclasses.replace(cfg.demo, **demo),
                              prepare=dataclasses.replace(cfg.prepare, **prepare))
    if not cfg.raw.exists():
        cfg.raw.mkdir(parents=True)
        datasets.spec(name).write_demo(cfg, cfg.raw)
    return cfg


def comparison(key: str, label: str, cfg, files: list[Path]) -> Comparison:
    module = datasets.spec(cfg.name)
    _, height, width = module.preprocess_one(cfg, files[0]).shape
    fit = getattr(cfg.prepare, "fit", "resize")
    check = same_array(mean_abs=MEAN_ABS_GREY)

    def each(fn):
        return lambda: np.stack([fn(p) for p in files])

    return Comparison(
        key, f"{cfg.name} {label} -> {height}x{width} ({fit})", "image", len(files), [
            Method("oncopipe (`preprocess_one`)",
                   each(lambda p: module.preprocess_one(cfg, p))),
            Method("PIL (`draft` for JPEG) + bilinear resize",
                   each(lambda p: pil_decode(p, height, width, fit)), check),
            Method("cv2 full decode + INTER_AREA resize",
                   each(lambda p: cv2_decode(p, height, width, fit)), check),
        ])


def comparisons(work: Path, quick: bool) -> list[Comparison]:
    limit = 6 if quick else 300
    pcam = _config("pcam", work, {"n_train": 20 if quick else 400, "n_test": 0}, {})
    isic_demo = {"n_patients": 3 if quick else 40, "large_images": 1 if quick else 4}
    isic = _config("isic", work, isic_demo, {"size": 64})
    isic_500 = dataclasses.replace(isic, prepare=dataclasses.replace(isic.prepare, size=500))
    breakhis = _config("breakhis", work, {"patients_per_subtype": 2},
                       {"image_size": 224})
    isic_files = image_files(isic.raw, limit)
    large = [p for p in isic_files if max(image_size(p)) >= LARGE_SIDE]
    cases = [
        ("decode-pcam", "patches (native TIFF)", pcam, image_files(pcam.raw, limit)),
        ("decode-isic", "photographs (JPEG), demo size", isic, isic_files),
        ("decode-isic-500", "photographs (JPEG), reference size", isic_500,
         isic_files[: limit // 3]),
        ("decode-isic-large", f"photographs >= {LARGE_SIDE} px (JPEG)", isic_500, large),
        ("decode-breakhis", "slides (PNG)", breakhis, image_files(breakhis.raw, limit // 2)),
    ]
    return [comparison(*case) for case in cases if case[3]]
