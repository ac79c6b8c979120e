"""A small synthetic prepared dataset (manifest + arrays) for the generic-stage tests.

The generic stages must not know any dataset, so their tests build their own input through
the public writers: ``write_manifest`` and ``ArrayWriter``. Class ``c`` images carry a bright
square whose position depends on ``c`` plus noise, so a tiny CNN separates them in a few
epochs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from oncopipe.core.config import (
    AugmentParams,
    DatasetConfig,
    EvaluateParams,
    ShardParams,
    TrainParams,
)
from oncopipe.core.manifest import ManifestMeta, write_manifest
from oncopipe.ingest.arrays import ArrayWriter
from oncopipe.shard.shards import write_shards

SMALL_TRAIN = TrainParams(model="cnn7", width=0.25, epochs=3, batch_size=16, lr=3.0e-3,
                          schedule="cosine", threads=1, patience=5,
                          augment=AugmentParams(hflip=True, rotate_deg=10.0, shift=0.05))


def make_prepared(out: Path, patients_per_class: tuple[int, ...] = (12, 6),
                  samples_per_patient: int = 3, size: int = 16, volume: bool = False,
                  dtype: str = "uint8", seed: int = 0, duplicate_across: bool = False,
                  channels: int = 1) -> Path:
    """Write ``out/manifest.parquet`` + ``out/images.npy``; returns ``out``.

    ``duplicate_across``: the first sample of patient 1 is a byte copy of patient 0's first
    sample (a re-upload under another id), to exercise the content-hash guard.
    """
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (channels, 4, size, size) if volume else (channels, size, size)
    rows = []
    first: np.ndarray | None = None
    with ArrayWriter(out / "images.npy", shape, dtype) as writer:
        pid = 0
        for label, n_pat in enumerate(patients_per_class):
            for _ in range(n_pat):
                for s in range(samples_per_patient):
                    img = rng.normal(0.3, 0.08, shape)
                    q = size // 4
                    r0 = q * (label % 3)
                    img[..., r0:r0 + q, q:3 * q] += 0.5
                    img = np.clip(img, 0, 1)
                    sample = (img * 255).astype(np.uint8) if dtype == "uint8" \
                        else img.astype(dtype)
                    if duplicate_across and pid == 1 and s == 0:
                        sample = first
                    if pid == 0 and s == 0:
                        first = sample
                    idx = writer.append(sample)
                    rows.append({"sample_id": f"p{pid:03d}-s{s}", "patient_id": f"p{pid:03d}",
                                 "label": label, "array_file": "images.npy",
                                 "array_index": idx, "source": f"raw/p{pid:03d}/{s}.png"})
                pid += 1
    names = tuple(f"class{c}" for c in range(len(patients_per_class)))
    meta = ManifestMeta(dataset="synthetic", task="binary", class_names=names,
                        layout="CDHW" if volume else "CHW",
                        normalisation={"scale": "x/255" if dtype == "uint8" else "none"},
                        params_hash="test")
    write_manifest(pl.DataFrame(rows), meta, out / "manifest.parquet")
    return out


def config_for(train: TrainParams = SMALL_TRAIN, seed: int = 1, bootstrap: int = 200,
               shard: ShardParams | None = None) -> DatasetConfig:
    """A DatasetConfig for the generic stages, without params.yaml or a dataset module."""
    return DatasetConfig(name="synthetic", seed=seed, raw=Path("unused"), task="binary",
                         profile="demo", demo=None, prepare=None, shard=shard or ShardParams(),
                         train=train, evaluate=EvaluateParams(bootstrap=bootstrap))


def make_shards(root: Path, shard: ShardParams | None = None, seed: int = 1, **kw) -> Path:
    """Prepared data + shards under ``root``; returns the shard directory."""
    prepared = make_prepared(root / "prepared", **kw)
    out = root / "shards"
    write_shards(prepared, out, shard or ShardParams(shard_size=16), seed, "test-hash")
    return out
