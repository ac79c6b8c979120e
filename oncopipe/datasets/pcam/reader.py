"""Reading the Kaggle histopathologic-cancer-detection tree: labels CSV and file listings.

Every raw item ends up either as a :class:`~oncopipe.imagefiles.imagedump.Candidate` or as a
rejection
with its reason: files in ``train/`` without a CSV row, CSV rows without a file, rows with an
unknown label, duplicate rows, stray files. An id listed twice with the same label keeps its
first row (the second is rejected as a duplicate); listed with different labels, both rows
are rejected and the image is not used, because either label may be the wrong one. The
unlabelled ``test/`` images are counted, not used (Kaggle withholds their labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from oncopipe.imagefiles.imagedump import Candidate
from oncopipe.ingest.rawfiles import RawLayoutError, read_csv, walk
from oncopipe.ingest.report import Report

LABELS_FILE = "train_labels.csv"
SUBMISSION_FILE = "sample_submission.csv"
SUFFIX = ".tif"
LABELS = {"0": 0, "1": 1}


@dataclass(frozen=True)
class Row:
    line: int
    label: int | None  # None: the label is unknown or disputed, see ``problem``
    problem: str = ""
    text: str = ""  # the label as written


def read_labels(root: Path, report: Report) -> dict[str, Row]:
    """``id -> Row`` from ``train_labels.csv``; malformed and duplicate rows are rejected."""
    path = root / LABELS_FILE
    if not path.is_file():
        raise RawLayoutError(f"{path}: not found; expected the Kaggle layout "
                          f"(train/, test/, {LABELS_FILE}, {SUBMISSION_FILE})")
    rows: dict[str, Row] = {}
    table = read_csv(path)
    header = table[0] if table else None
    if header is None or [h.strip() for h in header] != ["id", "label"]:
        raise RawLayoutError(f"{path}: header must be 'id,label', found {header!r}")
    for line, fields in enumerate(table[1:], start=2):
        if not fields:
            continue
        where = f"{LABELS_FILE}:{line}"
        if len(fields) != 2 or not fields[0].strip():
            report.read()
            report.reject(where, f"bad row: {fields!r} is not 'id,label'")
            continue
        image_id, label = fields[0].strip(), fields[1].strip()
        if image_id in rows:
            first = rows[image_id]
            report.read()
            if label == first.text:
                report.reject(where, f"duplicate row: id {image_id} already on line "
                                     f"{first.line}")
                continue
            # the two rows disagree: neither can be trusted, so the image is not used
            problem = (f"conflicting labels: id {image_id} is {label!r} on line {line} but "
                       f"{first.text!r} on line {first.line} of {LABELS_FILE}")
            report.reject(where, problem)
            rows[image_id] = Row(first.line, None, problem, first.text)
            continue
        if label in LABELS:
            rows[image_id] = Row(line, LABELS[label], text=label)
        else:
            rows[image_id] = Row(line, None, f"unknown label: {label!r} on line {line} "
                                             f"of {LABELS_FILE}", label)
    return rows


def scan_train(root: Path, report: Report) -> list[Candidate]:
    """Match ``train/*.tif`` against the labels; reject what does not match."""
    rows = read_labels(root, report)
    folder = root / "train"
    if not folder.is_dir():
        raise RawLayoutError(f"{folder}: folder of training images not found")
    candidates = []
    seen = set()
    for entry in walk(folder, report, base=root).files:
        source = f"train/{entry.relative_to(folder).as_posix()}"
        if entry.parent != folder:
            report.reject(source, "unexpected location: in a subfolder of train/")
            continue
        if entry.suffix.lower() != SUFFIX:
            report.reject(source, f"unexpected entry: not a {SUFFIX} file")
            continue
        image_id = entry.name[: -len(SUFFIX)]
        row = rows.get(image_id)
        if row is None:
            report.reject(source, f"missing from CSV: no row in {LABELS_FILE}")
            continue
        seen.add(image_id)
        if row.label is None:
            report.reject(source, row.problem)
            continue
        candidates.append(Candidate(sample_id=image_id, patient_id=image_id, label=row.label,
                                    path=entry, source=source))
    for image_id in sorted(set(rows) - seen):
        report.read()
        report.reject(f"train/{image_id}{SUFFIX}",
                      f"file missing: listed on line {rows[image_id].line} of {LABELS_FILE}")
    return candidates


def scan_test(root: Path) -> dict:
    """Count the unlabelled test images and check them against ``sample_submission.csv``."""
    tree = walk(root / "test", what="PCam test", base=root) if (root / "test").is_dir() else None
    files = {p.name[: -len(SUFFIX)] for p in (tree.files if tree else [])
             if p.suffix.lower() == SUFFIX}
    summary: dict = {"folder": "test", "files": len(files),
                     "reason": "unlabelled Kaggle test images, not used for training"}
    if tree and tree.problems:
        summary["problems"] = [f"{tree.rel(p)}: {why}" for p, why in tree.problems]
    sub = root / SUBMISSION_FILE
    if sub.is_file():
        listed = {r[0].strip() for r in read_csv(sub)[1:] if r}
        summary["submission_rows"] = len(listed)
        summary["submission_ids_without_file"] = len(listed - files)
        summary["files_not_in_submission"] = len(files - listed)
    return summary
