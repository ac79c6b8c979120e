"""The common manifest: the one table every dataset's prepare step hands to the generic stages.

One row per sample. Required columns (extra dataset-specific columns are allowed and kept):

==============  ========  =====================================================================
sample_id       str       unique within the dataset, stable across runs
patient_id      str       the split unit; datasets without patients use the image id (and say
                          so with ``patient_level=False`` in the metadata)
label           int64     index into ``class_names``
array_file      str       ``.npy`` file, relative to the manifest's directory
array_index     int64     row of this sample in ``array_file``
source          str       raw file(s) the sample came from, relative to the raw root, ``;``-joined
==============  ========  =====================================================================

Arrays are channel-first, ``(C, H, W)`` for images and ``(C, D, H, W)`` for volumes, uint8
(read as ``x / 255``) or float16/float32 already in model range. How raw values were mapped
into that range is recorded in ``normalisation`` so the shards and the model card carry it.
The metadata travels inside the Parquet file (schema metadata key ``oncopipe``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from oncopipe.core.atomic import atomic_path
from oncopipe.core.errors import InputError

REQUIRED: dict[str, pl.DataType] = {
    "sample_id": pl.String(),
    "patient_id": pl.String(),
    "label": pl.Int64(),
    "array_file": pl.String(),
    "array_index": pl.Int64(),
    "source": pl.String(),
}
META_KEY = b"oncopipe"


class ManifestError(InputError):
    """The manifest or its arrays break the common schema; the message names the file."""


@dataclass(frozen=True)
class ManifestMeta:
    dataset: str
    task: str
    class_names: tuple[str, ...]
    layout: str  # "CHW" or "CDHW"
    normalisation: dict[str, Any] = field(default_factory=dict)
    params_hash: str = ""
    patient_level: bool = True  # False: patient_id is an image id (no patients in the source)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ManifestMeta:
        data = json.loads(text)
        data["class_names"] = tuple(data["class_names"])
        return cls(**data)


def write_manifest(df: pl.DataFrame, meta: ManifestMeta, path: str | Path) -> None:
    """Validate the columns, sort by ``sample_id`` and write atomically with the metadata."""
    df = conform(df, Path(path))
    table = df.sort("sample_id").to_arrow()
    table = table.replace_schema_metadata({META_KEY: meta.to_json().encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_manifest(path: str | Path) -> tuple[pl.DataFrame, ManifestMeta]:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found (did the prepare stage run?)")
    table = pq.read_table(path)
    raw_meta = (table.schema.metadata or {}).get(META_KEY)
    if raw_meta is None:
        raise ManifestError(f"{path}: no oncopipe metadata; not written by write_manifest")
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)  # a Table always converts to a frame, never a Series
    return conform(df, path), ManifestMeta.from_json(raw_meta.decode())


def conform(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(f"{path}: missing required column(s) {missing}")
    df = df.with_columns([pl.col(c).cast(t, strict=True) for c, t in REQUIRED.items()])
    dup = df.filter(pl.col("sample_id").is_duplicated())["sample_id"].unique().to_list()
    if dup:
        raise ManifestError(f"{path}: duplicate sample_id(s) {dup[:5]}")
    nulls = [c for c in REQUIRED if df[c].null_count()]
    if nulls:
        raise ManifestError(f"{path}: null values in required column(s) {nulls}")
    return df


def check_arrays(df: pl.DataFrame, meta: ManifestMeta, base_dir: Path) -> None:
    """Every label names a class and every (array_file, array_index) exists."""
    n_classes = len(meta.class_names)
    bad = df.filter((pl.col("label") < 0) | (pl.col("label") >= n_classes))
    if len(bad):
        raise ManifestError(
            f"{base_dir}: label(s) outside 0..{n_classes - 1}, e.g. {bad['sample_id'][0]}"
        )
    for name, rows in df.group_by("array_file"):
        file = base_dir / str(name[0])
        if not file.is_file():
            raise ManifestError(f"{file}: array file named in the manifest does not exist")
        arr = np.load(file, mmap_mode="r")
        indices = rows["array_index"].to_numpy()
        top = int(indices.max())
        if top >= arr.shape[0] or int(indices.min()) < 0:
            raise ManifestError(f"{file}: array_index {top} out of range for {arr.shape[0]} rows")
