"""MosMedData as an nnU-Net v2 raw dataset: the studies the release ships a lesion mask for.

The release masks some CT-1 studies only (``masks/study_NNNN_mask.nii.gz``, attached to their
study by the prepare stage, the manifest's ``mask_file``); those studies, in the split the
shard stage decided, at their native resolution in HU, with the mask as label 1 ("lesion").
A study or mask that cannot be read, or whose mask is not on the study's voxel grid, is
recorded as a reject (path, reason), never dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl

from oncopipe.core.errors import RejectError
from oncopipe.datasets.mosmed.volume import VolumeError, read_nifti
from oncopipe.export.nnunet import Case
from oncopipe.export.source import Source

DATASET_ID = 502  # rename the folder if it clashes with a dataset of yours
NAME = "MosMedData"
LABELS = {"background": 0, "lesion": 1}
AFFINE_TOL_MM = 1e-3


def cases(raw: Path, source: Source, rejects: list[tuple[str, str]]) -> Iterator[Case]:
    """The masked studies of ``source`` (the manifest joined with the shards' split); each
    unusable one is appended to ``rejects`` as (raw path, reason)."""
    masked = source.table.filter(pl.col("mask_file") != "")
    for row in masked.iter_rows(named=True):
        try:
            image, affine = read_nifti(raw / row["source"])
            label, label_affine = read_nifti(raw / row["mask_file"])
            if label.shape != image.shape:
                raise VolumeError(f"{raw / row['mask_file']}: shape {label.shape}, its study "
                                  f"{image.shape}")
            if not np.allclose(label_affine, affine, atol=AFFINE_TOL_MM):
                raise VolumeError(f"{raw / row['mask_file']}: not on its study's voxel grid "
                                  "(affines differ)")
            values = np.unique(label)
            if not set(values.tolist()) <= {0, 1}:
                raise VolumeError(f"{raw / row['mask_file']}: values {values[:5].tolist()}, "
                                  "expected 0 and 1")
        except RejectError as exc:
            rejects.append((row["mask_file"], str(exc)))
            continue
        yield Case(case_id=row["sample_id"], patient_id=row["patient_id"], split=row["split"],
                   image=np.asarray(image), label=np.asarray(label, dtype=np.uint8),
                   affine=affine)
