"""Synthetic PCam (Kaggle histopathologic-cancer-detection) in the real raw layout.

Writes ``train/<id>.tif`` (96 x 96 RGB, uncompressed TIFF like the Kaggle files),
``test/<id>.tif``, ``train_labels.csv`` (``id,label``) and ``sample_submission.csv``.
Ids are 40 lowercase hex characters. The images imitate H&E-stained lymph-node tissue: pink
eosin background, small regular purple nuclei; tumour is a patch of large, dense, dark,
irregular nuclei. The label follows PCam's definition: positive when tumour reaches the centre
32 x 32 pixels; some negatives carry tumour in the border only, which does not count, so a
model has to look at where the tumour is, not only whether there is any.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from oncopipe.core.config import DatasetConfig
from oncopipe.datasets.pcam.params import DemoParams

SIDE = 96
CENTRE = (32, 64)  # the centre 32 x 32 region, [start, stop) on both axes
_EOSIN = np.array([236.0, 176.0, 208.0])
_NUCLEUS = np.array([120.0, 70.0, 160.0])
_TUMOUR = np.array([78.0, 34.0, 118.0])


def write_demo(cfg: DatasetConfig, out_dir: Path) -> None:
    """Write the demo tree into ``out_dir``; same params, same bytes."""
    p: DemoParams = cfg.demo
    rng = np.random.default_rng([p.seed, 0])
    train_ids = _ids(rng, p.n_train)
    test_ids = _ids(rng, p.n_test)
    labels = (rng.random(p.n_train) < p.positive_fraction).astype(int)
    for folder, ids, labs in (("train", train_ids, labels),
                              ("test", test_ids, rng.random(p.n_test) < p.positive_fraction)):
        (out_dir / folder).mkdir(parents=True)
        for i, (image_id, label) in enumerate(zip(ids, labs, strict=True)):
            img_rng = np.random.default_rng([p.seed, 1 if folder == "train" else 2, i])
            img = tissue(img_rng, bool(label), p.border_tumour_fraction)
            _write_tif(out_dir / folder / f"{image_id}.tif", img)
    _write_csv(out_dir / "train_labels.csv", zip(train_ids, labels.tolist(), strict=True))
    _write_csv(out_dir / "sample_submission.csv", ((i, 0) for i in test_ids))


def tissue(rng: np.random.Generator, positive: bool, border_fraction: float) -> np.ndarray:
    """One 96 x 96 RGB uint8 patch; tumour in the centre 32 x 32 exactly when ``positive``."""
    stain = rng.normal(1.0, 0.05, 3)
    low = cv2.resize(rng.normal(0.0, 14.0, (6, 6, 3)), (SIDE, SIDE),
                     interpolation=cv2.INTER_CUBIC)
    img = np.clip(_EOSIN * stain + low, 0, 255).astype(np.float64)
    for x, y, r in rng.integers((0, 0, 4), (SIDE, SIDE, 12), (rng.integers(0, 3), 3)):
        cv2.circle(img, (int(x), int(y)), int(r), (248, 238, 245), -1, cv2.LINE_AA)  # lumen, fat
    n = int(rng.integers(25, 45))  # normal nuclei, small and round
    shapes = rng.integers((0, 0, 1, 1), (SIDE, SIDE, 3, 3), (n, 4))
    colours = _NUCLEUS * stain + rng.normal(0, 10, (n, 3))
    for (x, y, ax, ay), colour in zip(shapes.tolist(), colours.tolist(), strict=True):
        cv2.ellipse(img, (x, y), (ax, ay), 0, 0, 360, colour, -1, cv2.LINE_AA)
    if positive:
        _tumour(img, rng, stain, _centre_point(rng))
    elif rng.random() < border_fraction:
        _tumour(img, rng, stain, _border_point(rng), keep_out=True)
    img += rng.normal(0.0, 5.0, img.shape)
    blurred = cv2.GaussianBlur(img, (3, 3), 0.6)
    return np.clip(blurred + 0.5, 0, 255).astype(np.uint8)


def _tumour(img: np.ndarray, rng: np.random.Generator, stain: np.ndarray,
            centre: tuple[int, int], keep_out: bool = False) -> None:
    """A cluster of large dark pleomorphic nuclei around ``centre`` (x, y); with ``keep_out``,
    nothing is drawn inside the centre 32 x 32 region (a border-only tumour)."""
    radius = rng.uniform(12, 20)
    n = int(radius * radius / 5)
    points = (np.asarray(centre) + rng.normal(0, radius / 2, (n, 2))).astype(int)
    axes = rng.integers((3, 2), (6, 5), (n, 2))
    angles = rng.uniform(0, 180, n)
    colours = _TUMOUR * stain + rng.normal(0, 12, (n, 3))
    a, b = CENTRE
    for (x, y), ax, angle, colour in zip(points.tolist(), axes.tolist(), angles.tolist(),
                                         colours.tolist(), strict=True):
        reach = max(ax) + 2  # anti-aliasing and the final blur spread one pixel or two
        if keep_out and a - reach <= x < b + reach and a - reach <= y < b + reach:
            continue
        cv2.ellipse(img, (x, y), tuple(ax), angle, 0, 360, colour, -1, cv2.LINE_AA)
    if not keep_out:  # make sure the centre itself carries tumour
        cx, cy = rng.integers(a + 4, b - 4, 2)
        cv2.ellipse(img, (int(cx), int(cy)), (5, 4), 0, 0, 360,
                    tuple(float(c) for c in _TUMOUR * stain), -1, cv2.LINE_AA)


def _centre_point(rng: np.random.Generator) -> tuple[int, int]:
    x, y = rng.integers(CENTRE[0], CENTRE[1], 2)
    return int(x), int(y)


def _border_point(rng: np.random.Generator) -> tuple[int, int]:
    """A point in the outer band, at most 12 px from an edge."""
    along = int(rng.integers(0, SIDE))
    across = int(rng.integers(0, 12))
    side = int(rng.integers(0, 4))
    across = across if side < 2 else SIDE - 1 - across
    return (along, across) if side % 2 == 0 else (across, along)


def _ids(rng: np.random.Generator, n: int) -> list[str]:
    return [rng.bytes(20).hex() for _ in range(n)]


def _write_tif(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".tif", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_TIFF_COMPRESSION, 1])
    if not ok:
        raise RuntimeError(f"{path}: TIFF encoding failed")
    path.write_bytes(buf.tobytes())


def _write_csv(path: Path, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["id", "label"])
        writer.writerows(rows)
