"""Find the studies of a MosMedData download: from ``dataset_registry.csv`` or the folder tree.

Layouts accepted (see docs/data.md):

- the full release: ``dataset_registry.csv`` (UTF-8 *with a BOM*; paths start with ``/`` and
  are relative to the release root) + ``studies/CT-k/study_NNNN.nii.gz`` +
  ``masks/study_NNNN_mask.nii.gz``. The registry is authoritative; study files on disk that it
  does not list are rejected as ``unlisted``, listed files that are absent as ``missing``.
  Some copies carry the registry as ``dataset_registry.xlsx`` only: it is read when the CSV is
  absent (:mod:`.xlsx`, the standard library's zip and XML readers, no spreadsheet package);
- the same tree without the registry: the category is the ``CT-k`` folder a study lies in;
- the Keras example's subset: ``MosMedData/CT-0/*.nii.gz`` and ``MosMedData/CT-23/*.nii.gz``
  (``CT-23`` = studies of CT-2 and CT-3, kept as its own category name).

Every study file found or listed ends up either in the returned list or in the report as a
rejection; so does every mask file that cannot be attached to a study. One study is one
patient in this release (each study id appears once), so the study id is the patient id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from oncopipe.datasets.mosmed import xlsx
from oncopipe.datasets.mosmed.params import CATEGORIES
from oncopipe.ingest.rawfiles import RawLayoutError, read_csv, walk
from oncopipe.ingest.report import Report

REGISTRY_FILE = "dataset_registry.csv"
REGISTRY_XLSX = "dataset_registry.xlsx"
COLUMNS = ("study_id", "category", "study_file", "mask_file")
_CATEGORY_DIR = re.compile(r"^CT-\d+$")
_MASK_SUFFIX = "_mask"


@dataclass(frozen=True)
class Study:
    study_id: str  # file stem, e.g. "study_0255"; also the patient id
    category: str  # "CT-0" ... "CT-4", or "CT-23" in the Keras subset
    path: str  # relative to the raw root, forward slashes
    mask: str  # relative path of the lesion mask, "" when there is none


def stem(path: str | Path) -> str:
    """``study_0255`` from ``.../study_0255.nii.gz`` (or ``.nii``)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_nifti(path: Path) -> bool:
    return path.name.endswith((".nii.gz", ".nii"))


def find_studies(raw: Path, report: Report) -> list[Study]:
    """All usable studies under ``raw``, sorted by id; everything else goes to ``report``.

    The items are studies (and masks that cannot be attached): each registry row or study
    file is one item read. Files that are neither NIfTI nor the registry are listed in the
    report (``other_files``); links that cannot be followed are rejected.
    """
    tree = walk(raw, what="MosMedData")
    tree.record(report)
    files = [p for p in tree.files if is_nifti(p)]
    others = [tree.rel(p) for p in tree.files
              if not is_nifti(p) and p.name not in (REGISTRY_FILE, REGISTRY_XLSX)]
    if others:
        report.extra["other_files"] = others
    masks = {stem(p)[: -len(_MASK_SUFFIX)]: p for p in files if stem(p).endswith(_MASK_SUFFIX)}
    volumes = [p for p in files if not stem(p).endswith(_MASK_SUFFIX)]
    if (raw / REGISTRY_FILE).is_file():
        studies = _from_registry(raw, _csv_rows(raw / REGISTRY_FILE), REGISTRY_FILE, volumes,
                                 report)
    elif (raw / REGISTRY_XLSX).is_file():
        report.extra["registry"] = REGISTRY_XLSX
        studies = _from_registry(raw, _xlsx_rows(raw / REGISTRY_XLSX), REGISTRY_XLSX, volumes,
                                 report)
    else:
        studies = _from_tree(raw, volumes, masks, report)
    attached = {s.mask for s in studies if s.mask}
    for study_id, path in sorted(masks.items()):
        rel = path.relative_to(raw).as_posix()
        if rel not in attached:
            report.read()
            report.reject(rel, f"orphan mask: no usable study {study_id}")
    return sorted(studies, key=lambda s: s.study_id)


def _category_of(path: Path) -> str | None:
    return path.parent.name if _CATEGORY_DIR.match(path.parent.name) else None


def _from_tree(raw: Path, volumes: list[Path], masks: dict[str, Path],
               report: Report) -> list[Study]:
    studies: dict[str, Study] = {}
    for path in volumes:
        rel = path.relative_to(raw).as_posix()
        report.read()
        category = _category_of(path)
        study_id = stem(path)
        if category is None:
            report.reject(rel, "no category: not inside a CT-k folder")
        elif category not in CATEGORIES:
            report.reject(rel, f"unknown category: {category}")
        elif study_id in studies:
            report.reject(rel, f"duplicate study: {study_id} also at {studies[study_id].path}")
        else:
            mask = masks.get(study_id)
            studies[study_id] = Study(study_id, category, rel,
                                      mask.relative_to(raw).as_posix() if mask else "")
    return list(studies.values())


def _csv_rows(registry: Path) -> list[dict[str, str]]:
    return _rows(read_csv(registry), registry)  # UTF-8; the BOM the release writes is dropped


def _xlsx_rows(registry: Path) -> list[dict[str, str]]:
    try:
        return _rows(xlsx.read_first_sheet(registry), registry)
    except xlsx.XlsxError as exc:
        raise RawLayoutError(str(exc)) from None


def _rows(table: list[list[str]], registry: Path) -> list[dict[str, str]]:
    """Rows as ``column -> stripped value``: a long row's surplus fields are not read (they
    are not needed), a short row's missing fields are empty."""
    header = [c.strip() for c in table[0]] if table else []
    absent = [c for c in COLUMNS[:3] if c not in header]
    if absent:
        raise RawLayoutError(f"{registry}: missing column(s) {absent} (header: {header}); "
                             f"expected {','.join(COLUMNS)}")
    return [{name: value.strip()
             for name, value in zip(header, [*fields, *[""] * len(header)], strict=False)}
            for fields in table[1:]]


def _from_registry(raw: Path, rows: list[dict[str, str]], registry_name: str,
                   volumes: list[Path], report: Report) -> list[Study]:
    on_disk = {p.relative_to(raw).as_posix() for p in volumes}
    listed: set[str] = set()
    studies: dict[str, Study] = {}
    # numbered before blank lines of a CSV and empty sheet rows are skipped, so that a row's
    # number is its line in the file
    numbered = [(line, r) for line, r in enumerate(rows, start=2) if any(r.values())]
    for line, row in numbered:
        report.read()
        rel = row["study_file"].lstrip("/")  # "/studies/CT-0/study_0001.nii.gz"
        where = rel or f"{registry_name}:{line}"
        listed.add(rel)
        category = row["category"]
        folder = _category_of(Path(rel))
        if not rel:
            report.reject(where, "registry row without study_file")
        elif category not in CATEGORIES:
            report.reject(where, f"unknown category: {category!r}")
        elif folder is not None and folder != category:
            report.reject(where, f"category conflict: registry {category}, folder {folder}")
        elif rel not in on_disk:
            report.reject(where, f"missing: listed in {registry_name} but not on disk")
        elif stem(rel) in studies:
            report.reject(where, f"duplicate study: {stem(rel)} listed twice")
        else:
            mask = row.get("mask_file", "").lstrip("/")
            if mask and not (raw / mask).is_file():
                report.extra.setdefault("masks_missing", []).append(mask)
                mask = ""
            studies[stem(rel)] = Study(stem(rel), category, rel, mask)
    for rel in sorted(on_disk - listed):
        report.read()
        report.reject(rel, f"unlisted: not in {registry_name}")
    return list(studies.values())
