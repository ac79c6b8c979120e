"""The common manifest: schema checks, metadata round trip, array cross-checks."""

import numpy as np
import polars as pl
import pytest

from oncopipe.core.manifest import (
    ManifestError,
    ManifestMeta,
    check_arrays,
    read_manifest,
    write_manifest,
)
from oncopipe.ingest.arrays import ArrayWriter

META = ManifestMeta(dataset="toy", task="binary", class_names=("neg", "pos"), layout="CHW",
                    normalisation={"kind": "uint8"}, params_hash="abc", patient_level=True)


def _frame(n=4, **overrides):
    data = {
        "sample_id": [f"s{i}" for i in range(n)],
        "patient_id": [f"p{i // 2}" for i in range(n)],
        "label": [i % 2 for i in range(n)],
        "array_file": ["x.npy"] * n,
        "array_index": list(range(n)),
        "source": [f"raw/{i}.png" for i in range(n)],
        "extra": list(range(n)),
    }
    data.update(overrides)
    return pl.DataFrame(data)


def test_round_trip_keeps_metadata_and_extra_columns(tmp_path):
    path = tmp_path / "manifest.parquet"
    write_manifest(_frame().reverse(), META, path)
    df, meta = read_manifest(path)
    assert meta == META
    assert df["sample_id"].to_list() == ["s0", "s1", "s2", "s3"]  # sorted for determinism
    assert "extra" in df.columns and df.schema["label"] == pl.Int64


def test_same_input_same_bytes(tmp_path):
    write_manifest(_frame(), META, tmp_path / "a.parquet")
    write_manifest(_frame().reverse(), META, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_missing_column_is_named(tmp_path):
    with pytest.raises(ManifestError, match="patient_id"):
        write_manifest(_frame().drop("patient_id"), META, tmp_path / "m.parquet")
    assert not (tmp_path / "m.parquet").exists()


def test_duplicate_sample_ids_rejected(tmp_path):
    with pytest.raises(ManifestError, match="duplicate sample_id"):
        write_manifest(_frame(sample_id=["a", "a", "b", "c"]), META, tmp_path / "m.parquet")


def test_check_arrays(tmp_path):
    with ArrayWriter(tmp_path / "x.npy", (3, 2, 2), np.uint8) as w:
        for _ in range(4):
            w.append(np.zeros((3, 2, 2), np.uint8))
    check_arrays(_frame(), META, tmp_path)
    with pytest.raises(ManifestError, match="out of range"):
        check_arrays(_frame(array_index=[0, 1, 2, 9]), META, tmp_path)
    with pytest.raises(ManifestError, match="label"):
        check_arrays(_frame(label=[0, 1, 2, 0]), META, tmp_path)
    with pytest.raises(ManifestError, match="missing.npy"):
        check_arrays(_frame(array_file=["missing.npy"] * 4), META, tmp_path)
