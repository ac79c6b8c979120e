"""An nnU-Net v2 raw dataset: ``DatasetNNN_<Name>/`` as ``nnUNet_raw`` holds it.

``imagesTr/<case>_0000.nii.gz`` + ``labelsTr/<case>.nii.gz`` for the cases of our train and
val splits, ``imagesTs/<case>_0000.nii.gz`` for the test split (no labels: nnU-Net never
trains on them), ``dataset.json`` (``channel_names``, ``labels``, ``numTraining``,
``file_ending``) and ``splits_final.json`` with one fold: our train split as ``train``, our
val split as ``val``. nnU-Net's own five folds split by case, and a patient with several
cases would then sit in training and validation; with this file (copied into the dataset's
``nnUNet_preprocessed`` folder, where nnU-Net reads it) fold 0 is our patient-level split.
``samples.csv`` maps each case to its patient and split.

The dataset's package gives the cases (images in HU, label masks, affines); this module knows
no dataset. Every file is byte-stable (gzip with ``mtime=0``).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from oncopipe.core import provenance
from oncopipe.core.atomic import atomic_path
from oncopipe.export.source import SPLITS, Source

FILE_ENDING = ".nii.gz"


@dataclass(frozen=True)
class Case:
    """One image with its label mask, on the same voxel grid (``affine``)."""

    case_id: str
    patient_id: str
    split: str  # train | val | test (the shards')
    image: np.ndarray  # voxels in file order (x, y, z), HU
    label: np.ndarray  # same shape, integer labels
    affine: np.ndarray  # 4 x 4, shared by image and label


def nifti_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)


def folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"nnU-Net dataset ids are 1-999, not {dataset_id}")
    return f"Dataset{dataset_id:03d}_{name}"


def write(cases: Iterable[Case], out: Path, channel: str, labels: dict[str, int],
          about: dict) -> dict:
    """Replace ``out`` (a ``DatasetNNN_<Name>`` folder) by the dataset; return its counts.

    ``labels``: nnU-Net's ``{"background": 0, ...}``; ``about``: extra keys of dataset.json
    (description, reference, licence, and what made it).
    """
    rows: list[tuple[str, str, str]] = []
    with atomic_path(out) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (tmp / sub).mkdir(parents=True)
        for case in cases:
            if case.split not in SPLITS:
                raise ValueError(f"{case.case_id}: split {case.split!r}")
            if case.image.shape != case.label.shape:
                raise ValueError(f"{case.case_id}: image {case.image.shape} and label "
                                 f"{case.label.shape} differ")
            images = "imagesTs" if case.split == "test" else "imagesTr"
            (tmp / images / f"{case.case_id}_0000{FILE_ENDING}").write_bytes(
                nifti_bytes(case.image, case.affine))
            if case.split != "test":
                (tmp / "labelsTr" / f"{case.case_id}{FILE_ENDING}").write_bytes(
                    nifti_bytes(case.label.astype(np.uint8), case.affine))
            rows.append((case.case_id, case.patient_id, case.split))
        rows.sort(key=lambda r: (SPLITS.index(r[2]), r[0]))
        by_split = {s: [r[0] for r in rows if r[2] == s] for s in SPLITS}
        patients = {s: {r[1] for r in rows if r[2] == s} for s in SPLITS}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            if patients[a] & patients[b]:
                raise ValueError(f"patient {sorted(patients[a] & patients[b])[0]} is in the "
                                 f"{a} and the {b} split")
        dataset = {"channel_names": {"0": channel}, "labels": labels,
                   "numTraining": len(by_split["train"]) + len(by_split["val"]),
                   "file_ending": FILE_ENDING, **about}
        _json(tmp / "dataset.json", dataset)
        _json(tmp / "splits_final.json", [{"train": by_split["train"],
                                           "val": by_split["val"]}])
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["case_id", "patient_id", "split"])
        writer.writerows(rows)
        (tmp / "samples.csv").write_text(buf.getvalue(), encoding="utf-8")
    return {s: len(v) for s, v in by_split.items()}


def _json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_record(out: Path, dataset: str, counts: dict[str, int], rejects: list[tuple[str, str]],
                 src: Source, params_hash: str, **extra: object) -> None:
    """``export.json``: what made the raw dataset (the manifest, shards and params it came
    from) and every case left out with its reason, so a downstream user can check both."""
    record = {"dataset": dataset, "cases": counts, "rejected": [list(r) for r in rejects],
              "manifest_sha256": src.manifest_sha256, "params_hash": params_hash,
              "shards_params_hash": src.shards_params_hash,
              "oncopipe_version": provenance.code_version()["version"], **extra}
    (out / "export.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n",
                                     encoding="utf-8")
