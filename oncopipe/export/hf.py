"""Hugging Face ``datasets``: one Parquet file per split with typed features.

``data/<split>.parquet`` with ``image`` (``Image``, PNG) for 8-bit 2D images or ``array``
(``Array3D`` / ``Array4D`` as stored, channel-first) otherwise, ``label`` (``ClassLabel``
with the class names), ``sample_id`` and ``patient_id``. Read it with
``datasets.load_dataset("parquet", data_files={"train": ".../train.parquet", ...})``.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np

from oncopipe.export import files
from oncopipe.export.source import SPLITS, Source


def features(source: Source, sample: np.ndarray) -> tuple[str, datasets.Features]:
    if files.suffix(sample, source.volumetric) == ".png":
        column, feature = "image", datasets.Image()
    else:
        cls = datasets.Array4D if sample.ndim == 4 else datasets.Array3D
        column, feature = "array", cls(shape=sample.shape, dtype=str(sample.dtype))
    return column, datasets.Features({
        "sample_id": datasets.Value("string"),
        "patient_id": datasets.Value("string"),
        "label": datasets.ClassLabel(names=list(source.class_names)),
        column: feature,
    })


def write(source: Source, out_dir: Path, params) -> dict:
    first = source.array(source.table.row(0, named=True))
    column, feats = features(source, first)
    (out_dir / "data").mkdir()
    written = {}
    for split in SPLITS:
        rows = source.split(split).to_dicts()
        if not rows:
            continue
        arrays = [source.array(r) for r in rows]
        values = ([{"bytes": files.encode(a, False, None), "path": None} for a in arrays]
                  if column == "image" else np.stack(arrays))
        ds = datasets.Dataset.from_dict({
            "sample_id": [r["sample_id"] for r in rows],
            "patient_id": [r["patient_id"] for r in rows],
            "label": [r["label"] for r in rows],
            column: values,
        }, features=feats)
        ds.to_parquet(str(out_dir / "data" / f"{split}.parquet"))
        written[split] = len(rows)
    return written
