"""Synthetic SIIM-ISIC Melanoma Classification 2020 data in the Kaggle layout.

Writes ``train.csv`` / ``test.csv`` / ``sample_submission.csv`` with the real columns and
value sets (empty fields for missing values, ages as floats in steps of 5),
``jpeg/train/ISIC_NNNNNNN.jpg`` and ``jpeg/test/...`` of varied sizes including a few large
photographs (thousands of pixels a side), several images per patient, and the ISIC
duplicates list (``ISIC_2020_Training_Duplicates.csv``, not in the Kaggle download but
published by ISIC) naming re-encoded copies. Lesions follow the ABCD cues dermatologists
use: benign ones are small, round and evenly brown; melanomas are larger, asymmetric, with
irregular borders and several colours (black, dark brown, blue-grey).
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from oncopipe.core.config import DatasetConfig
from oncopipe.datasets.isic.params import DemoParams

TRAIN_COLUMNS = ("image_name", "patient_id", "sex", "age_approx",
                 "anatom_site_general_challenge", "diagnosis", "benign_malignant", "target")
TEST_COLUMNS = TRAIN_COLUMNS[:5]
DUPLICATES_FILE = "ISIC_2020_Training_Duplicates.csv"
SITES = ("torso", "lower extremity", "upper extremity", "head/neck", "palms/soles",
         "oral/genital")
SITE_WEIGHTS = (0.51, 0.26, 0.15, 0.055, 0.015, 0.01)
BENIGN_DIAGNOSES = ("unknown", "nevus", "seborrheic keratosis", "lentigo NOS",
                    "lichenoid keratosis", "solar lentigo", "atypical melanocytic proliferation",
                    "cafe-au-lait macule")
BENIGN_WEIGHTS = (0.80, 0.16, 0.0135, 0.0135, 0.0052, 0.0025, 0.0025, 0.0028)
SIZES = ((480, 640), (480, 640), (640, 640), (768, 1024), (512, 683))  # (height, width)
LARGE_SIZES = ((4000, 6000), (2448, 3264), (3456, 5184))
_RENDER_SIDE = 256  # lesions are drawn at this size, then scaled to the file's size


def write_demo(cfg: DatasetConfig, out_dir: Path) -> None:
    """Write the demo tree into ``out_dir``; same params, same bytes."""
    p: DemoParams = cfg.demo
    rng = np.random.default_rng([p.seed, 0])
    names = iter(_image_names(rng, 2 * p.n_patients * p.images_per_patient[1] + p.n_test))
    n_all = p.n_patients + max(1, p.n_test // 4)
    numbers = (rng.choice(9_000_000, size=n_all, replace=False) + 1_000_000).tolist()
    patients = [_patient(rng, i, f"IP_{v}") for i, v in enumerate(numbers)]
    train_patients, test_patients = patients[:p.n_patients], patients[p.n_patients:]

    rows = []
    for patient in train_patients:
        for _ in range(int(rng.integers(p.images_per_patient[0], p.images_per_patient[1] + 1))):
            malignant = bool(rng.random() < p.malignant_fraction)
            diagnosis = "melanoma" if malignant else str(rng.choice(BENIGN_DIAGNOSES,
                                                                    p=BENIGN_WEIGHTS))
            rows.append({**_image_fields(rng, next(names), patient),
                         "diagnosis": diagnosis,
                         "benign_malignant": "malignant" if malignant else "benign",
                         "target": int(malignant)})
    rows[0]["anatom_site_general_challenge"] = ""  # at least one missing site
    large = set(rng.choice(len(rows), size=min(p.large_images, len(rows)), replace=False).tolist())
    images: dict[str, np.ndarray] = {}
    for i, row in enumerate(rows):
        size = LARGE_SIZES[len(images) % len(LARGE_SIZES)] if i in large else \
            SIZES[int(rng.integers(len(SIZES)))]
        images[row["image_name"]] = _photo(np.random.default_rng([p.seed, 1, i]),
                                           bool(row["target"]), size, row["patient_id"])
    pairs = []
    for row in [r for i, r in enumerate(rows) if i not in large][:p.duplicates]:
        copy = {**row, "image_name": next(names)}
        rows.append(copy)
        images[copy["image_name"]] = images[row["image_name"]]
        pairs.append(sorted((row["image_name"], copy["image_name"])))

    test_rows = [_image_fields(rng, next(names), test_patients[i % len(test_patients)])
                 for i in range(p.n_test)]
    for folder, table in (("train", rows), ("test", test_rows)):
        (out_dir / "jpeg" / folder).mkdir(parents=True)
        for i, row in enumerate(table):
            if folder == "train":
                img = images[row["image_name"]]
                quality = p.quality - (5 if any(row["image_name"] == b for _, b in pairs) else 0)
            else:
                img = _photo(np.random.default_rng([p.seed, 2, i]), False,
                             SIZES[i % len(SIZES)], row["patient_id"])
                quality = p.quality
            _write_jpeg(out_dir / "jpeg" / folder / f"{row['image_name']}.jpg", img, quality)
    by_name = lambda r: r["image_name"]  # noqa: E731 - the Kaggle CSVs are sorted by name
    _write_csv(out_dir / "train.csv", TRAIN_COLUMNS, sorted(rows, key=by_name))
    _write_csv(out_dir / "test.csv", TEST_COLUMNS, sorted(test_rows, key=by_name))
    _write_csv(out_dir / "sample_submission.csv", ("image_name", "target"),
               [{"image_name": r["image_name"], "target": 0} for r in sorted(test_rows,
                                                                              key=by_name)])
    _write_csv(out_dir / DUPLICATES_FILE, ("image_name_1", "image_name_2"),
               [{"image_name_1": a, "image_name_2": b} for a, b in sorted(pairs)])


def _patient(rng: np.random.Generator, index: int, patient_id: str) -> dict:
    """Patient-level fields; patient 0 has no sex and patient 1 no age (both occur in the
    real CSV as empty fields)."""
    sex = "" if index == 0 or rng.random() < 0.01 else str(rng.choice(("male", "female")))
    age = "" if index == 1 or rng.random() < 0.01 else f"{5.0 * rng.integers(4, 19):.1f}"
    return {"patient_id": patient_id, "sex": sex, "age_approx": age}


def _image_fields(rng: np.random.Generator, name: str, patient: dict) -> dict:
    site = "" if rng.random() < 0.02 else str(rng.choice(SITES, p=SITE_WEIGHTS))
    return {"image_name": name, "patient_id": patient["patient_id"], "sex": patient["sex"],
            "age_approx": patient["age_approx"], "anatom_site_general_challenge": site}


def _image_names(rng: np.random.Generator, n: int) -> list[str]:
    numbers = rng.choice(9_000_000, size=n, replace=False) + 1_000_000
    return [f"ISIC_{v:07d}" for v in numbers.tolist()]


def _photo(rng: np.random.Generator, malignant: bool, size: tuple[int, int],
           patient_id: str) -> np.ndarray:
    """A dermoscopy-like RGB photograph of ``size`` (height, width) holding one lesion."""
    height, width = size
    scale = _RENDER_SIDE / max(height, width)
    h, w = max(8, round(height * scale)), max(8, round(width * scale))
    tone = int(patient_id[3:]) % 1000 / 1000.0  # the patient's skin, 0 light to 1 dark
    skin = np.array([235.0, 200.0, 180.0]) * (1 - tone) + np.array([150.0, 105.0, 80.0]) * tone
    img = skin + cv2.resize(rng.normal(0, 8, (6, 8, 3)), (w, h), interpolation=cv2.INTER_CUBIC)

    cx, cy = w / 2 + rng.normal(0, w / 12), h / 2 + rng.normal(0, h / 12)
    radius = min(h, w) * (rng.uniform(0.2, 0.32) if malignant else rng.uniform(0.1, 0.2))
    mask = _blob(rng, (h, w), (cx, cy), radius, irregular=malignant)
    base = np.array([70.0, 45.0, 35.0]) if malignant else np.array([150.0, 100.0, 70.0])
    base = base * rng.uniform(0.85, 1.15)
    shade = cv2.resize(rng.normal(0, 0.3 if malignant else 0.06, (5, 5)), (w, h),
                       interpolation=cv2.INTER_CUBIC)  # darker and lighter areas
    tint = cv2.resize(rng.normal(0, 6.0, (5, 5, 3)), (w, h), interpolation=cv2.INTER_CUBIC)
    lesion = base * (1 + shade[..., None]) + tint
    if malignant:  # several colours: black and blue-grey islands inside the lesion
        for colour in ((25.0, 20.0, 25.0), (95.0, 105.0, 130.0), (120.0, 60.0, 50.0)):
            island = _blob(rng, (h, w), (cx + rng.normal(0, radius / 3),
                                         cy + rng.normal(0, radius / 3)),
                           radius * rng.uniform(0.2, 0.45), irregular=True)
            lesion = lesion * (1 - island[..., None]) + np.asarray(colour) * island[..., None]
    img = img * (1 - mask[..., None]) + lesion * mask[..., None]
    for _ in range(int(rng.integers(0, 4))):  # hairs
        p0 = tuple(int(v) for v in rng.integers(0, (w, h)))
        p1 = tuple(int(v) for v in rng.integers(0, (w, h)))
        cv2.line(img, p0, p1, (40.0, 30.0, 25.0), 1, cv2.LINE_AA)
    if rng.random() < 0.3:  # the dark circle of a dermoscope's lens
        yy, xx = np.mgrid[0:h, 0:w]
        outside = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2)) > 1.05
        img[outside] *= 0.1
    small = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _blob(rng: np.random.Generator, shape: tuple[int, int], centre: tuple[float, float],
          radius: float, irregular: bool) -> np.ndarray:
    """Soft mask in [0, 1] of a closed shape, round or with an irregular, asymmetric border."""
    theta = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    harmonics = range(2, 9) if irregular else range(2, 4)
    amplitude = 0.16 if irregular else 0.05
    r = np.ones_like(theta)
    for k in harmonics:
        r += rng.uniform(0, amplitude) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    points = np.stack([centre[0] + radius * r * np.cos(theta),
                       centre[1] + radius * r * np.sin(theta)], axis=1)
    mask = np.zeros(shape, np.float32)
    cv2.fillPoly(mask, [np.round(points * 4).astype(np.int32)], 1.0, cv2.LINE_AA, shift=2)
    blur = 2 * int(radius * (0.25 if irregular else 0.1)) + 1
    return cv2.GaussianBlur(mask, (blur, blur), 0)


def _write_jpeg(path: Path, rgb: np.ndarray, quality: int) -> None:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"{path}: JPEG encoding failed")
    path.write_bytes(buf.tobytes())


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
