"""Reading the SIIM-ISIC 2020 Kaggle tree: ``train.csv``, the JPEG folder, the duplicates list.

Every raw item ends up either as a :class:`~oncopipe.imagefiles.imagedump.Candidate` or as a
rejection
with its reason: images without a CSV row, rows without an image, unknown or inconsistent
labels (``target`` is 1 exactly when ``diagnosis`` is melanoma and ``benign_malignant`` is
malignant), rows without a patient id, duplicate rows (an image listed twice with another
label or patient is not used at all), the second image of each pair in the ISIC duplicates
list. A header naming a column twice stops the stage (:func:`oncopipe.ingest.rawfiles.read_csv`):
which of the two is meant cannot be known. Test images (no labels) are counted, not used.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from oncopipe.imagefiles.imagedump import Candidate
from oncopipe.ingest.rawfiles import RawLayoutError, read_csv, walk
from oncopipe.ingest.report import Report

TRAIN_CSV = "train.csv"
TEST_CSV = "test.csv"
REQUIRED = ("image_name", "patient_id", "target")
EXTRA_SCHEMA: dict[str, pl.DataType] = {
    "sex": pl.String(), "age_approx": pl.Float64(),
    "anatom_site_general_challenge": pl.String(), "diagnosis": pl.String()}
SUFFIXES = (".jpg", ".jpeg")
TARGETS = {"0": 0, "1": 1}
BENIGN_MALIGNANT = {"benign": 0, "malignant": 1}
# columns two rows of one image must agree on (the label and the split unit)
_IDENTITY = ("patient_id", "target", "benign_malignant", "diagnosis")


def _read_table(path: Path,
                required: tuple[str, ...]) -> list[tuple[int, dict[str, str | None]]]:
    """(line number, row) pairs of a CSV whose header must hold ``required``."""
    if not path.is_file():
        raise RawLayoutError(f"{path}: not found; expected the Kaggle layout (train.csv, test.csv, "
                          "jpeg/train/, jpeg/test/)")
    table = read_csv(path)
    fieldnames = table[0] if table else []
    missing = [c for c in required if c not in fieldnames]
    if missing:
        raise RawLayoutError(f"{path}: missing column(s) {missing}; found {fieldnames}")
    rows = []
    for line, fields in enumerate(table[1:], start=2):
        # as csv.DictReader: a short row's missing fields are None, a long row's surplus
        # fields are not read
        row: dict[str, str | None] = dict(zip(fieldnames, fields, strict=False))
        row.update((name, None) for name in fieldnames[len(fields):])
        if any(row.values()):
            rows.append((line, row))
    return rows


def _label(row: dict[str, str | None]) -> tuple[int | None, str]:
    """The binary label, or ``None`` and why it cannot be trusted."""
    target = (row.get("target") or "").strip()
    if target not in TARGETS:
        return None, f"unknown label: target {target!r}"
    label = TARGETS[target]
    verdict = (row.get("benign_malignant") or "").strip()
    if verdict and BENIGN_MALIGNANT.get(verdict) != label:
        return None, f"inconsistent label: target {target} but benign_malignant {verdict!r}"
    diagnosis = (row.get("diagnosis") or "").strip()
    if diagnosis and (diagnosis == "melanoma") != bool(label):
        return None, f"inconsistent label: target {target} but diagnosis {diagnosis!r}"
    return label, ""


def _extra(row: dict[str, str | None], where: str, report: Report) -> dict:
    """The optional metadata columns; a bad optional cell becomes null and a note in the
    report (``bad_optional_cells``), not a reason to drop the image or stop the stage."""
    age = (row.get("age_approx") or "").strip()
    try:
        age_value = float(age) if age else None
    except ValueError:
        age_value = None
    if age_value is not None and not 0 <= age_value <= 120:
        age_value = None
    if age and age_value is None:
        report.extra.setdefault("bad_optional_cells", []).append(
            f"{where}: age_approx {age!r} is not an age in years; stored as null")
    return {
        "sex": (row.get("sex") or "").strip() or None,
        "age_approx": age_value,
        "anatom_site_general_challenge":
            (row.get("anatom_site_general_challenge") or "").strip() or None,
        "diagnosis": (row.get("diagnosis") or "").strip() or None,
    }


def read_duplicates(path: Path) -> list[tuple[str, str]]:
    """Pairs from ISIC's duplicates list (``image_name_1,image_name_2``), in file order.

    A row without both names is a layout error: ignoring it would keep a duplicate image.
    """
    pairs = []
    for line, r in _read_table(path, ("image_name_1", "image_name_2")):
        first, second = ((r[c] or "").strip() for c in ("image_name_1", "image_name_2"))
        if not first or not second:
            raise RawLayoutError(f"{path}: line {line} needs both image_name_1 and "
                                 f"image_name_2, found {first!r}, {second!r}")
        pairs.append((first, second))
    return pairs


def scan_train(root: Path, image_dir: str, duplicates: str, report: Report) -> list[Candidate]:
    """Match the images in ``image_dir`` against ``train.csv``; reject what does not match."""
    rows: dict[str, tuple[int, dict[str, str | None]]] = {}
    disputed: dict[str, str] = {}  # image_name -> why its rows disagree
    for line, row in _read_table(root / TRAIN_CSV, REQUIRED):
        name = (row["image_name"] or "").strip()
        where = f"{TRAIN_CSV}:{line}"
        if not name:
            report.read()
            report.reject(where, "bad row: empty image_name")
        elif name in rows:
            report.read()
            first_line, first = rows[name]
            differs = [c for c in _IDENTITY if (row.get(c) or "").strip()
                       != (first.get(c) or "").strip()]
            if differs:  # neither row can be trusted: the image is not used
                disputed[name] = (f"conflicting rows: {name} has other {', '.join(differs)} "
                                  f"on line {line} than on line {first_line} of {TRAIN_CSV}")
                report.reject(where, disputed[name])
            else:
                report.reject(where, f"duplicate row: {name} already on line {first_line}")
        else:
            rows[name] = (line, row)

    dropped = _duplicates_to_drop(root, duplicates, rows, report)
    folder = root / image_dir
    if not folder.is_dir():
        raise RawLayoutError(f"{folder}: image folder not found (params isic.prepare.image_dir; "
                          "the Kaggle download has the JPEGs in jpeg/train)")
    candidates = []
    seen = set()
    for entry in walk(folder, report, base=root).files:
        source = f"{image_dir}/{entry.relative_to(folder).as_posix()}"
        if entry.parent != folder:
            report.reject(source, f"unexpected location: in a subfolder of {image_dir}/")
            continue
        if entry.suffix.lower() not in SUFFIXES:
            report.reject(source, "unexpected entry: not a .jpg file")
            continue
        name = entry.stem
        if name not in rows:
            report.reject(source, f"missing from CSV: no row in {TRAIN_CSV}")
            continue
        seen.add(name)
        line, row = rows[name]
        if name in disputed:
            report.reject(source, disputed[name])
            continue
        if name in dropped:
            report.reject(source, dropped[name])
            continue
        label, problem = _label(row)
        patient = (row["patient_id"] or "").strip()
        if label is None:
            report.reject(source, f"{problem} (line {line} of {TRAIN_CSV})")
        elif not patient:
            report.reject(source, f"no patient id: empty patient_id on line {line} of "
                                  f"{TRAIN_CSV}")
        else:
            candidates.append(Candidate(sample_id=name, patient_id=patient, label=label,
                                        path=entry, source=source,
                                        extra=_extra(row, f"{TRAIN_CSV}:{line}", report)))
    for name in sorted(set(rows) - seen):
        report.read()
        report.reject(f"{image_dir}/{name}.jpg",
                      f"file missing: listed on line {rows[name][0]} of {TRAIN_CSV}")
    return candidates


def _duplicates_to_drop(root: Path, duplicates: str, rows: dict, report: Report) -> dict:
    """``image_name -> reason`` for the second image of each listed pair whose first image is
    in ``train.csv`` and not itself dropped (chains keep only their first image)."""
    if not duplicates or not (root / duplicates).is_file():
        report.extra["duplicates_list"] = "not present"
        return {}
    dropped: dict[str, str] = {}
    pairs = read_duplicates(root / duplicates)
    for first, second in pairs:
        if first in rows and first not in dropped and second in rows:
            dropped[second] = f"duplicate: same lesion image as {first} ({duplicates})"
    report.extra["duplicates_list"] = {"file": duplicates, "pairs": len(pairs),
                                       "dropped": len(dropped)}
    return dropped


def scan_test(root: Path, test_dir: str) -> dict:
    """Count the unlabelled test images (``test.csv`` rows and files)."""
    folder = root / test_dir
    tree = walk(folder, what="ISIC test", base=root) if folder.is_dir() else None
    files = {p.stem for p in (tree.files if tree else []) if p.suffix.lower() in SUFFIXES}
    summary: dict = {"folder": test_dir, "files": len(files),
                     "reason": "unlabelled Kaggle test images, not used for training"}
    if tree and tree.problems:
        summary["problems"] = [f"{tree.rel(p)}: {why}" for p, why in tree.problems]
    if (root / TEST_CSV).is_file():
        listed = {(r["image_name"] or "").strip()
                  for _, r in _read_table(root / TEST_CSV, ("image_name",))}
        summary["csv_rows"] = len(listed)
        summary["csv_rows_without_file"] = len(listed - files)
        summary["files_not_in_csv"] = len(files - listed)
    return summary
