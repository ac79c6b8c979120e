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

from oncopipe.arrays import ArrayWriter
from oncopipe.manifest import ManifestMeta, write_manifest


def make_prepared(out: Path, patients_per_class: tuple[int, ...] = (12, 6),
                  samples_per_patient: int = 3, size: int = 16, volume: bool = False,
                  dtype: str = "uint8", seed: int = 0, duplicate_across: bool = False) -> Path:
    """Write ``out/manifest.parquet`` + ``out/images.npy``; returns ``out``.

    ``duplicate_across``: the first sample of patient 1 is a byte copy of patient 0's first
    sample (a re-upload under another id), to exercise the content-hash guard.
    """
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (1, 4, size, size) if volume else (1, size, size)
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
