"""nnU-Net v2 raw datasets: MosMedData's masked studies pass nnU-Net's own integrity check,
carry the shards' patient-level split as fold 0, and account for every unusable mask."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import shutil

import numpy as np
import polars as pl
import pytest
from dataset_params import digest
from test_mosmed import make_cfg, run_prepare

from oncopipe.config import ShardParams
from oncopipe.datasets.mosmed import demo
from oncopipe.datasets.mosmed import nnunet as mosmed_nnunet
from oncopipe.datasets.mosmed.params import DemoParams
from oncopipe.export import nnunet, source
from oncopipe.shards import write_shards

DEMO = DemoParams(seed=3, studies=(3, 8, 2, 1, 1), masks=6, size=32, slices=(8, 10),
                  noise_hu=10.0)


@pytest.fixture(scope="module")
def mosmed(tmp_path_factory):
    """(raw, prepared source) of a small MosMed demo with six masked studies."""
    root = tmp_path_factory.mktemp("nnunet")
    raw = root / "raw"
    raw.mkdir()
    demo.write_demo(make_cfg(raw, DEMO), raw)
    run_prepare(raw, root / "prepared")
    write_shards(root / "prepared", root / "shards", ShardParams(ratios=(0.5, 0.25, 0.25)), 1,
                 "h")
    return raw, source.load(root / "prepared", root / "shards")


def _write(raw, src, out):
    rejects: list = []
    counts = nnunet.write(mosmed_nnunet.cases(raw, src, rejects), out, "CT",
                          mosmed_nnunet.LABELS, {"name": "MosMedData"})
    return counts, rejects


def test_mosmed_masked_studies_pass_nnunet_s_integrity_check(mosmed, tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    raw, src = mosmed
    out = tmp_path / nnunet.folder_name(mosmed_nnunet.DATASET_ID, mosmed_nnunet.NAME)
    counts, rejects = _write(raw, src, out)
    assert rejects == []
    masked = src.table.filter(pl.col("mask_file") != "")
    assert len(masked) == DEMO.masks
    want = {s: sorted(masked.filter(pl.col("split") == s)["sample_id"]) for s in source.SPLITS}
    assert counts == {s: len(v) for s, v in want.items()} and counts["train"] > 0
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        verify_dataset_integrity(str(out), 1)  # raises on an error
    assert "Error" not in printed.getvalue() and "Warning" not in printed.getvalue()
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["numTraining"] == counts["train"] + counts["val"]
    assert dataset["labels"] == {"background": 0, "lesion": 1}
    (fold,) = json.loads((out / "splits_final.json").read_text())
    assert fold == {"train": want["train"], "val": want["val"]}
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == [
        f"{c}_0000.nii.gz" for c in want["test"]]
    cases = pl.read_csv(out / "samples.csv")
    patients = {s: set(cases.filter(pl.col("split") == s)["patient_id"]) for s in source.SPLITS}
    assert not (patients["train"] & patients["val"] or patients["train"] & patients["test"]
                or patients["val"] & patients["test"])
    # the label is the release's mask, voxel for voxel, on the study's grid
    import nibabel as nib

    first = want["train"][0]
    row = masked.filter(pl.col("sample_id") == first).row(0, named=True)
    label = nib.load(out / "labelsTr" / f"{first}.nii.gz")
    release = nib.load(raw / row["mask_file"])
    assert np.array_equal(np.asarray(label.dataobj), np.asarray(release.dataobj))
    assert np.allclose(label.affine, release.affine)
    again = tmp_path / "again"
    _write(raw, src, again)
    assert digest(again) == digest(out)


def test_an_unusable_mask_is_recorded_not_dropped(mosmed, tmp_path):
    raw, src = mosmed
    copy = tmp_path / "raw"
    shutil.copytree(raw, copy)
    masked = src.table.filter(pl.col("mask_file") != "")["mask_file"].to_list()
    (copy / masked[0]).write_bytes((copy / masked[0]).read_bytes()[:200])  # truncated
    small = np.zeros((4, 4, 4), np.int16)
    import nibabel as nib

    (copy / masked[1]).write_bytes(gzip.compress(nib.Nifti1Image(small, np.eye(4)).to_bytes()))
    counts, rejects = _write(copy, src, tmp_path / "out")
    assert [r[0] for r in rejects] == masked[:2]
    assert "shape" in rejects[1][1] and masked[1] in rejects[1][1]
    assert sum(counts.values()) == len(masked) - 2


def test_a_patient_in_two_splits_is_refused(tmp_path):
    grid = np.zeros((4, 4, 4), np.int16)
    cases = [nnunet.Case(f"c{i}", "p0", split, grid, grid.astype(np.uint8), np.eye(4))
             for i, split in enumerate(("train", "val"))]
    with pytest.raises(ValueError, match="patient p0 is in the train and the val split"):
        nnunet.write(cases, tmp_path / "Dataset001_X", "CT", {"background": 0}, {})
    assert not (tmp_path / "Dataset001_X").exists()
