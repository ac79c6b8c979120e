"""The samples an export writes: the manifest's rows in the split the shard stage decided.

Only the shards' unique samples are exported (``copy == 0`` of ``index.parquet``):
oversampled repeats are a training choice, not data, and samples that undersampling left
out of the training shards are not in them either (``export.json`` counts them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from oncopipe.core import provenance
from oncopipe.core.cards import ShardSummary
from oncopipe.core.manifest import ManifestMeta, check_arrays, read_manifest
from oncopipe.shard import shards

SPLITS = ("train", "val", "test")


class ExportError(ValueError):
    """The prepared data and the shards disagree; the message names the file."""


@dataclass
class Source:
    """One dataset's exportable samples, in a fixed order (split, then sample id)."""

    prepared: Path
    table: pl.DataFrame  # sample_id, patient_id, label, split, array_file, array_index, ...
    meta: ManifestMeta
    manifest_sha256: str
    shards_params_hash: str
    not_in_shards: int
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.meta.class_names

    @property
    def volumetric(self) -> bool:
        return self.meta.layout == "CDHW"

    def split(self, name: str) -> pl.DataFrame:
        return self.table.filter(pl.col("split") == name)

    def array(self, row: dict) -> np.ndarray:
        """The sample's array, channel-first as the manifest stores it."""
        name = row["array_file"]
        if name not in self._arrays:
            self._arrays[name] = np.load(self.prepared / name, mmap_mode="r")
        return np.asarray(self._arrays[name][row["array_index"]])

    def spacing(self, row: dict, spatial: tuple[int, ...]) -> tuple[float, ...] | None:
        """Voxel size (mm) of the stored array, from the manifest's source spacing and shape.

        ``None`` when the manifest has no ``spacing_mm`` / ``source_shape`` for the sample.
        """
        spacing, shape = row.get("spacing_mm"), row.get("source_shape")
        if not spacing or not shape:
            return None
        sp = [float(v) for v in str(spacing).split("x")]
        sh = [int(v) for v in str(shape).split("x")]
        if len(sp) != len(spatial) or len(sh) != len(spatial):
            return None
        return tuple(round(s * n / m, 6) for s, n, m in zip(sp, sh, spatial, strict=True))


def load(prepared: Path, shard_dir: Path) -> Source:
    """Join the manifest with the shards' split; refuse if they do not belong together."""
    manifest = prepared / "manifest.parquet"
    df, meta = read_manifest(manifest)
    check_arrays(df, meta, prepared)
    summary = ShardSummary.read(shard_dir)
    if summary.manifest_samples != len(df):
        raise ExportError(f"{shard_dir}: shards were made from {summary.manifest_samples} "
                          f"samples, {manifest} has {len(df)} (rerun the shard stage)")
    index = shards.read_index(shard_dir).filter(pl.col("copy") == 0)
    dup = index.filter(pl.col("sample_id").is_duplicated())
    if len(dup):
        raise ExportError(f"{shard_dir}: sample {dup['sample_id'][0]} is in two splits")
    split = index.select("sample_id", "split")
    table = df.join(split, on="sample_id", how="inner")
    if len(table) != len(index):
        raise ExportError(f"{shard_dir}: index names samples that {manifest} does not have")
    order = {s: i for i, s in enumerate(SPLITS)}
    table = (table.with_columns(pl.col("split").replace_strict(order, return_dtype=pl.Int64)
                                .alias("_order"))
             .sort("_order", "sample_id").drop("_order"))
    return Source(prepared=prepared, table=table, meta=meta,
                  manifest_sha256=provenance.file_sha256(manifest),
                  shards_params_hash=summary.params_hash,
                  not_in_shards=len(df) - len(table))
