"""Shard stage: patient-level split, leakage guard, balancing, HDF5 layout, determinism."""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import polars as pl
import pytest
from synthetic_data import make_prepared

from oncopipe.core.config import ShardParams
from oncopipe.core.manifest import ManifestError, read_manifest, write_manifest
from oncopipe.shard import shards
from oncopipe.shard.shards import LeakageError, check_leakage, read_index, write_shards


def _shard(tmp_path, name="out", seed=1, **params):
    prepared = tmp_path / "prepared"
    if not (prepared / "manifest.parquet").exists():
        make_prepared(prepared, patients_per_class=(20, 8), samples_per_patient=3)
    out = tmp_path / name
    summary = write_shards(prepared, out, ShardParams(shard_size=16, **params), seed, "h")
    return out, summary


def test_split_is_by_patient_and_keeps_every_sample(tmp_path):
    out, summary = _shard(tmp_path)
    index = read_index(out)
    per_patient = index.group_by("patient_id").agg(pl.col("split").n_unique())
    assert per_patient["split"].max() == 1
    assert index["sample_id"].n_unique() == 28 * 3  # nothing dropped
    assert summary.splits["train"].patients == 20  # 0.7 of 20 + 0.7 of 8, rounded
    for split in ("val", "test"):  # stratified: each label present in every split
        assert all(v > 0 for v in summary.splits[split].class_counts.values())


def test_undersample_balances_training_only(tmp_path):
    _, summary = _shard(tmp_path, balance="undersample")
    train = summary.splits["train"].class_counts
    assert train["class0"] == train["class1"]
    test = summary.splits["test"].class_counts
    assert test["class0"] > test["class1"]  # true mix kept outside training
    assert summary.class_weights is None


def test_oversample_balances_within_ten_percent(tmp_path):
    out, summary = _shard(tmp_path, balance="oversample")
    counts = list(summary.splits["train"].class_counts.values())
    assert max(counts) <= 1.1 * min(counts)
    index = read_index(out, "train")
    assert index["copy"].max() >= 1  # repeats are marked
    assert summary.splits["train"].unique_samples < summary.splits["train"].samples


def test_none_records_inverse_frequency_class_weights(tmp_path):
    _, summary = _shard(tmp_path, balance="none")
    counts = summary.splits["train"].class_counts
    w = summary.class_weights
    assert w[1] > w[0]
    assert w[0] * counts["class0"] == pytest.approx(w[1] * counts["class1"], rel=1e-4)


def test_same_seed_same_bytes_other_seed_other_split(tmp_path):
    a, _ = _shard(tmp_path, "a", seed=3)
    b, _ = _shard(tmp_path, "b", seed=3)
    c, _ = _shard(tmp_path, "c", seed=4)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name

    def patients_in_test(d):
        return set(read_index(d, "test")["patient_id"].to_list())

    assert patients_in_test(a) != patients_in_test(c)


def test_identical_content_under_two_patients_stays_in_one_split(tmp_path):
    prepared = make_prepared(tmp_path / "prepared", (20, 8), 3, duplicate_across=True)
    summary = write_shards(prepared, tmp_path / "out", ShardParams(), 1, "h")
    index = read_index(tmp_path / "out")
    splits = index.filter(pl.col("patient_id").is_in(["p000", "p001"]))["split"].unique()
    assert len(splits) == 1
    assert summary.duplicate_links == 1


def test_leakage_guard_names_the_patient():
    index = pl.DataFrame({"patient_id": ["a", "a", "b"], "split": ["train", "test", "val"],
                          "content_hash": ["1", "2", "3"]})
    with pytest.raises(LeakageError, match="'a'"):
        check_leakage(index)
    dup = pl.DataFrame({"patient_id": ["a", "b"], "split": ["train", "test"],
                        "content_hash": ["same", "same"]})
    with pytest.raises(LeakageError, match="sample content"):
        check_leakage(dup)


@pytest.mark.parametrize("compression", ["none", "lzf"])
def test_hdf5_layout_and_content(tmp_path, compression):
    out, summary = _shard(tmp_path, compression=compression)
    src = np.load(tmp_path / "prepared" / "images.npy")
    index = read_index(out, "val").sort(["shard", "row"])
    first = index.row(0, named=True)
    with h5py.File(out / first["shard"], "r") as f:
        x = f["x"]
        assert x.chunks == (None if compression == "none" else (1, *x.shape[1:]))
        assert json.loads(f.attrs["class_names"]) == ["class0", "class1"]
        # this stage's hash chained to the manifest's ("test", tests/synthetic_data.py)
        assert f.attrs["params_hash"] == hashlib.sha256(b"test:h").hexdigest()[:16]
        assert f["sample_id"][first["row"]].decode() == first["sample_id"]
        pid, s = first["sample_id"].split("-s")
        row = int(pid[1:]) * 3 + int(s)  # make_prepared writes patients in order
        np.testing.assert_array_equal(x[first["row"]], src[row])
        assert f["y"][first["row"]] == first["label"]
    assert summary.sample_shape == (1, 16, 16) and summary.dtype == "|u1"


def test_bad_label_is_reported_with_the_file(tmp_path):
    prepared = make_prepared(tmp_path / "prepared", (3, 3), 1)
    df = pl.read_parquet(prepared / "manifest.parquet")
    from oncopipe.core.manifest import read_manifest, write_manifest

    _, meta = read_manifest(prepared / "manifest.parquet")
    write_manifest(df.with_columns(pl.lit(7, pl.Int64).alias("label")), meta,
                   prepared / "manifest.parquet")
    with pytest.raises(ManifestError, match="label"):
        write_shards(prepared, tmp_path / "out", ShardParams(), 1)
    assert not (tmp_path / "out").exists()  # nothing half-written


@pytest.mark.parametrize("compression", ["none", "lzf"])
def test_batched_writer_gives_the_per_sample_writers_bytes(tmp_path, monkeypatch, compression):
    prepared = make_prepared(tmp_path / "prepared", (20, 8), 3)
    # Two array files, rows interleaved, so the gather has to merge reads from both.
    df, meta = read_manifest(prepared / "manifest.parquet")
    images = np.load(prepared / "images.npy")
    odd = df["array_index"].to_numpy() % 2 == 1
    np.save(prepared / "odd.npy", images[1::2])
    df = df.with_columns(
        pl.when(pl.Series(odd)).then(pl.lit("odd.npy")).otherwise(pl.col("array_file"))
        .alias("array_file"),
        pl.when(pl.Series(odd)).then(pl.col("array_index") // 2).otherwise(pl.col("array_index"))
        .alias("array_index"))
    write_manifest(df, meta, prepared / "manifest.parquet")
    params = ShardParams(shard_size=16, compression=compression, balance="oversample")
    write_shards(prepared, tmp_path / "new", params, 2, "h")
    monkeypatch.setattr(shards, "_BLOCK_BYTES", 5 * 256)  # 5 samples a block: several blocks
    write_shards(prepared, tmp_path / "blocks", params, 2, "h")
    # The reference: one sample a block, i.e. one read and one HDF5 write per sample, as the
    # writer did before the batched gather.
    monkeypatch.setattr(shards, "_BLOCK_BYTES", 1)
    write_shards(prepared, tmp_path / "old", params, 2, "h")
    names = sorted(p.name for p in (tmp_path / "old").iterdir())
    assert len([n for n in names if n.endswith(".h5")]) > 3
    # every stored sample is its manifest row's array (both files; oversampled copies too)
    source = {sid: np.load(prepared / file, mmap_mode="r")[i] for sid, file, i in
              df.select("sample_id", "array_file", "array_index").iter_rows()}
    for split in ("train", "val", "test"):
        for shard, rows in read_index(tmp_path / "new", split).group_by("shard"):
            with h5py.File(tmp_path / "new" / shard[0], "r") as f:
                for sid, row in rows.select("sample_id", "row").iter_rows():
                    np.testing.assert_array_equal(f["x"][row], source[sid])
    for out in ("new", "blocks"):
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == names
        for name in names:
            assert (tmp_path / out / name).read_bytes() == (tmp_path / "old" / name).read_bytes()
