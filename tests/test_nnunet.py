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

from oncopipe.core.config import ShardParams
from oncopipe.datasets.mosmed import demo
from oncopipe.datasets.mosmed import nnunet as mosmed_nnunet
from oncopipe.datasets.mosmed.params import DemoParams
from oncopipe.export import nnunet, source
from oncopipe.shard.shards import write_shards

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


# ------------------------------------------------------------------------------------- LIDC

@pytest.fixture(scope="module")
def lidc(tmp_path_factory):
    """(lesion table, outlines, headers, split of each patient) of a small LIDC demo."""
    import pyarrow.parquet as pq
    from dataset_params import LIDC_SMALL

    from oncopipe.datasets.lidc import agreement, lesions, slice_table
    from oncopipe.datasets.lidc.demo import write as write_lidc_demo
    from oncopipe.datasets.lidc.params import PrepareParams

    root = tmp_path_factory.mktemp("lidc")
    write_lidc_demo(LIDC_SMALL, root / "raw")
    marks: list = []
    table, slices, _ = lesions.build_tables(root / "raw", PrepareParams(), "h", marks=marks)
    pq.write_table(slices.to_arrow(), root / "lesions_slices.parquet")
    headers = slice_table.read(root / "lesions_slices.parquet", root / "raw")
    patients = sorted(set(table["patient_id"]))
    split_of = {p: source.SPLITS[i % 3] for i, p in enumerate(patients[:-1])}  # last: none
    return table, agreement.contours_frame(marks), headers, split_of, patients[-1]


def test_lidc_nodules_with_consensus_masks_pass_nnunet_s_check(lidc, tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    from oncopipe.datasets.lidc import consensus

    table, outlines, headers, split_of, unsplit = lidc
    out = tmp_path / nnunet.folder_name(consensus.DATASET_ID, consensus.NAME)
    rejects: list = []
    counts = nnunet.write(consensus.cases(table, outlines, headers, split_of, 0.5, rejects),
                          out, "CT", consensus.LABELS, {})
    nodules = table.filter(pl.col("kind") == "nodule")
    left_out = nodules.filter(pl.col("patient_id") == unsplit)["lesion_id"].to_list()
    assert [r[0] for r in rejects] == left_out and left_out
    assert sum(counts.values()) == len(nodules) - len(left_out)
    for split in source.SPLITS:
        want = nodules.filter(pl.col("patient_id").replace_strict(split_of, default="")
                              == split)["lesion_id"].to_list()
        assert counts[split] == len(want)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        verify_dataset_integrity(str(out), 1)
    assert "Error" not in printed.getvalue() and "Warning" not in printed.getvalue()
    import nibabel as nib

    for label in sorted((out / "labelsTr").iterdir()):
        mask = np.asarray(nib.load(label).dataobj)
        image = np.asarray(nib.load(out / "imagesTr" / label.name.replace(
            ".nii.gz", "_0000.nii.gz")).dataobj)
        assert mask.any(), label.name  # every nodule has a consensus at 50%
        assert image[mask > 0].mean() > image[mask == 0].mean()  # denser than around it


def test_consensus_is_pylidc_s(lidc):
    """Our readers' masks and their consensus, voxel for voxel as pylidc.utils.consensus."""
    import warnings

    from oncopipe.datasets.lidc import consensus
    from oncopipe.datasets.lidc.clustering import PlacedNodule, PlacedRoi, pylidc_scan
    from oncopipe.datasets.lidc.reader_xml import NoduleMark

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pylidc.utils import consensus as pylidc_consensus
    table, outlines, headers, _, _ = lidc
    several = (table.filter((pl.col("kind") == "nodule") & (pl.col("n_readers") >= 3))
               .sort("lesion_id").row(0, named=True))
    header = headers[(several["series_dir"], several["series_uid"])]
    rois = outlines.filter(pl.col("lesion_id") == several["lesion_id"])
    zs = header.zs
    nodules = [PlacedNodule(NoduleMark(int(m), str(m), None, ()),
                            tuple(PlacedRoi(r["k"], float(zs[r["k"]]), r["inclusion"],
                                            np.c_[r["xs"], r["ys"]])
                                  for r in part.to_dicts()))
               for (m,), part in rois.group_by(["mark"], maintain_order=True)]
    with pylidc_scan(nodules, zs, header.slice_thickness, header.spacing_xy[0]) as scan:
        for level in (0.25, 0.5, 1.0):
            want, bbox = pylidc_consensus(scan.annotations, clevel=level, ret_masks=False)
            box = (bbox[2].start, bbox[2].stop, bbox[0].start, bbox[0].stop, bbox[1].start,
                   bbox[1].stop)
            masks = [consensus.reader_mask(part.to_dicts(), box)
                     for _, part in rois.group_by(["mark"], maintain_order=True)]
            got = consensus.consensus_mask(masks, level)
            assert np.array_equal(got, want.transpose(2, 0, 1)), level
