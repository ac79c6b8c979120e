"""Exports, each read back with its own toolkit: MONAI, MedMNIST, Hugging Face datasets and
WebDataset, on small synthetic prepared data (2D RGB uint8, 2D gray float, 3D volumes).

Every check compares what the toolkit reads with the manifest and the shards' split, and
that no patient crosses splits.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from dataset_params import digest
from synthetic_data import make_prepared

from oncopipe import datasets
from oncopipe.core.config import ExportParams, ShardParams
from oncopipe.core.contract import Provenance
from oncopipe.core.manifest import read_manifest
from oncopipe.export import writer
from oncopipe.shard.shards import read_index, write_shards

SPLITS = ("train", "val", "test")
PROVENANCE = Provenance(release="synthetic", page="https://example.org", licence="none",
                        citation="none", not_for=("anything",))
REPORT = {"read": 0, "kept": 0, "rejected": 2, "rejected_by_reason": {"corrupt": 2}}
SECTION = {"title": "Readers", "lines": ["| readers | lesions |", "| --- | --- |", "| 2 | 7 |"],
           "figures": {"readers": {"2": 7}}}
CASES = {  # name: (make_prepared kwargs, balance)
    "rgb": ({"channels": 3, "size": 32, "dtype": "uint8"}, "undersample"),
    "gray": ({"channels": 1, "size": 20, "dtype": "float16"}, "oversample"),
    "volume": ({"channels": 1, "size": 12, "dtype": "float16", "volume": True}, "none"),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory):
    """(case, export dir, expected table: sample_id, patient_id, label, split)."""
    root = tmp_path_factory.mktemp(request.param)
    kwargs, balance = CASES[request.param]
    prepared = make_prepared(root / "prepared", patients_per_class=(6, 4), **kwargs)
    if kwargs.get("volume"):  # spacing as the volume datasets record it
        df, meta = read_manifest(prepared / "manifest.parquet")
        from oncopipe.core.manifest import write_manifest
        write_manifest(df.with_columns(pl.lit("8x2x2").alias("spacing_mm"),
                                       pl.lit("2x24x24").alias("source_shape")),
                       meta, prepared / "manifest.parquet")
    n = len(read_manifest(prepared / "manifest.parquet")[0])
    report = {**REPORT, "read": n + 2, "kept": n}
    if request.param == "gray":  # a dataset's own section (LIDC: the readers' agreement)
        (prepared / "datacard_sections.json").write_text(json.dumps({"sections": [SECTION]}))
    (prepared / "report.json").write_text(json.dumps(report))
    write_shards(prepared, root / "shards", ShardParams(balance=balance, shard_size=8), 3, "h",
                 {"source": "demo", "path": "data/demo/synthetic", "manifest_sha256": "-"})
    out = root / "exports"
    params = ExportParams(medmnist_sizes=(28, 64))
    writer.export(prepared, root / "shards", out, params, "phash", PROVENANCE)
    index = read_index(root / "shards").filter(pl.col("copy") == 0)
    expected = index.select("sample_id", "patient_id", "label", "split").sort("sample_id")
    return request.param, out, expected, root


def _split_of(expected: pl.DataFrame, split: str) -> pl.DataFrame:
    return expected.filter(pl.col("split") == split).sort("sample_id")


def _no_patient_crosses(patients_by_split: dict[str, set[str]]) -> None:
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not patients_by_split[a] & patients_by_split[b], (a, b)


def test_rerun_is_byte_identical_and_records_provenance(exported, tmp_path):
    _case, out, expected, root = exported
    again = tmp_path / "again"
    writer.export(root / "prepared", root / "shards", again, ExportParams(), "phash",
                  PROVENANCE)
    assert digest(again) == digest(out)
    for fmt in ExportParams().formats:
        record = json.loads((out / fmt / "export.json").read_text())
        assert record["format"] == fmt and record["export_params_hash"] == "phash"
        assert len(record["manifest_sha256"]) == 64
        assert sum(v["samples"] for v in record["splits"].values()) == len(expected)
        samples = pl.read_csv(out / fmt / "samples.csv").sort("sample_id")
        assert samples.select(expected.columns).equals(expected)


def test_monai_datalist_loads_every_entry(exported):
    from monai.data import Dataset, load_decathlon_datalist
    from monai.transforms import LoadImaged

    case, out, expected, _ = exported
    patients = {}
    for split, key in (("train", "training"), ("val", "validation"), ("test", "test")):
        entries = load_decathlon_datalist(str(out / "monai" / "datalist.json"),
                                          is_segmentation=False, data_list_key=key)
        want = _split_of(expected, split)
        got = pl.DataFrame([{k: e[k] for k in ("sample_id", "patient_id", "label")}
                            for e in entries]).sort("sample_id")
        assert got.equals(want.drop("split"))
        for item in Dataset(entries, transform=LoadImaged(keys="image")):
            shape = tuple(item["image"].shape)
            assert shape == {"rgb": (32, 32, 3), "gray": (1, 20, 20),
                             "volume": (12, 12, 4)}[case], shape
            if case == "volume":  # voxel size: source spacing x source shape / shape
                assert np.allclose(item["image"].pixdim[:3], (4.0, 4.0, 4.0))
        patients[split] = set(got["patient_id"])
        if split != "test":
            assert {e["fold"] for e in entries} == {0 if split == "val" else 1}
    _no_patient_crosses(patients)


def test_medmnist_dataset_class_reads_the_npz(exported):
    import medmnist
    from medmnist.dataset import MedMNIST2D, MedMNIST3D

    case, out, expected, _ = exported
    info = json.loads((out / "medmnist" / "info.json").read_text())
    (flag, entry), = info.items()
    medmnist.INFO[flag] = entry  # MedMNIST opens only the flags its INFO knows
    base = MedMNIST3D if case == "volume" else MedMNIST2D
    cls = type(entry["python_class"], (base,), {"flag": flag})
    with np.load(out / "medmnist" / f"{flag}.npz") as npz:
        patients = {s: set(npz[f"{s}_patient_ids"].tolist()) for s in SPLITS}
    _no_patient_crosses(patients)
    for size in (28, 64):
        for split in SPLITS:
            ds = cls(split=split, root=str(out / "medmnist"), size=size)
            want = _split_of(expected, split)
            assert len(ds) == len(want)
            img, target = ds[0]
            if case == "volume":
                assert img.shape == (1, size, size, size)
            else:
                assert img.size == (size, size)
                assert img.mode == ("RGB" if case == "rgb" else "L")
            with np.load(out / "medmnist" / f"{flag}{'' if size == 28 else f'_{size}'}.npz") \
                    as npz:
                order = np.argsort(npz[f"{split}_sample_ids"])
                assert npz[f"{split}_sample_ids"][order].tolist() == want["sample_id"].to_list()
                assert ds.labels[order, 0].tolist() == want["label"].to_list()
                assert int(target[0]) == int(npz[f"{split}_labels"][0, 0])


def test_hugging_face_parquet_loads_with_features(exported, tmp_path):
    import datasets

    case, out, expected, _ = exported
    files = {s: str(out / "hf" / "data" / f"{s}.parquet") for s in SPLITS}
    dd = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path))
    patients = {}
    for split in SPLITS:
        ds = dd[split]
        want = _split_of(expected, split)
        got = pl.DataFrame({"sample_id": ds["sample_id"], "patient_id": ds["patient_id"],
                            "label": ds["label"]}).sort("sample_id")
        assert got.equals(want.drop("split"))
        assert ds.features["label"].names == ["class0", "class1"]
        column = "image" if case == "rgb" else "array"
        assert column in ds.features
        first = ds[0][column]
        if case == "rgb":
            assert first.size == (32, 32) and first.mode == "RGB"
        else:
            assert np.asarray(first).shape == ((1, 20, 20) if case == "gray"
                                               else (1, 4, 12, 12))
        patients[split] = set(got["patient_id"])
    _no_patient_crosses(patients)


def test_webdataset_streams_one_epoch(exported):
    import webdataset as wds

    case, out, expected, _ = exported
    patients = {}
    for split in SPLITS:
        url = str(out / "webdataset" / f"{split}-000000.tar")
        rows = []
        for sample in wds.WebDataset(url, shardshuffle=False).decode():
            meta = sample["json"]
            assert meta["split"] == split and sample["npy"].ndim == (4 if case == "volume"
                                                                      else 3)
            rows.append({"sample_id": meta["sample_id"], "patient_id": meta["patient_id"],
                         "label": int(sample["cls"])})
        got = pl.DataFrame(rows).sort("sample_id")
        assert got.equals(_split_of(expected, split).drop("split"))
        patients[split] = set(got["patient_id"])
    _no_patient_crosses(patients)


def test_data_card_figures_match_manifest_shards_and_report(exported):
    case, out, expected, root = exported
    card = json.loads((out / "datacard.json").read_text())
    df, meta = read_manifest(root / "prepared" / "manifest.parquet")
    report = json.loads((root / "prepared" / "report.json").read_text())
    a = card["accounting"]
    assert a == {**{k: report[k] for k in a if k != "manifest_samples"},
                 "manifest_samples": len(df)}
    assert a["manifest_samples"] == len(expected) + card["not_in_shards"]
    assert card["class_names"] == list(meta.class_names) and card["demo"] is True
    for split in SPLITS:
        want = _split_of(expected, split)
        got = card["splits"][split]
        assert got["samples"] == len(want)
        assert got["patients"] == want["patient_id"].n_unique()
        assert [got["class_counts"][c] for c in meta.class_names] == [
            int((want["label"] == i).sum()) for i in range(len(meta.class_names))]
    shard_train = read_index(root / "shards", "train")
    assert card["balance"]["training_shard_samples"] == len(shard_train)
    f = card["fingerprint"]
    assert f["sample_shape"] == list(np.load(root / "prepared" / "images.npy",
                                             mmap_mode="r").shape[1:])
    lo, mid, hi = f["intensity_percentiles"].values()
    assert lo <= mid <= hi
    if case == "volume":
        assert f["spacing_mm_median"] == [4.0, 4.0, 4.0]
    md = (out / "DATACARD.md").read_text()
    for figure in (card["accounting"]["read"], card["accounting"]["rejected"],
                   card["splits"]["test"]["samples"]):
        assert str(figure) in md
    assert "research use only" in md and "synthetic demo" in md
    if case == "gray":
        assert card["sections"] == [SECTION]
        assert "## Readers\n\n| readers | lesions |\n| --- | --- |\n| 2 | 7 |\n" in md
    else:
        assert "sections" not in card


@pytest.mark.parametrize("name", datasets.NAMES)
def test_every_dataset_card_cites_what_data_md_says(name):
    """The provenance on the card is docs/data.md's, not a second version of it."""
    from pathlib import Path

    p = datasets.spec(name).provenance
    docs = " ".join(Path("docs/data.md").read_text().replace("> ", " ").split())
    assert p.page in docs and p.release.split(" (")[0].split(",")[0] in docs
    assert " ".join(p.citation.split())[:80] in docs
    assert p.not_for
