"""What every export folder carries: ``export.json`` (what made it) and ``samples.csv``.

``samples.csv`` maps each exported sample to its patient and split, so that a user of any
format can check downstream that no patient crosses splits.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from oncopipe.core import provenance
from oncopipe.export.source import SPLITS, Source


def write(source: Source, out_dir: Path, fmt: str, params_hash: str, written: dict) -> None:
    """Write ``samples.csv`` and ``export.json`` into ``out_dir`` (byte-stable)."""
    (source.table.select("sample_id", "patient_id", "label", "split")
     .with_columns(pl.col("label").map_elements(lambda i: source.class_names[i],
                                                return_dtype=pl.String).alias("class"))
     .write_csv(out_dir / "samples.csv"))
    counts = {s: {"samples": len(source.split(s)),
                  "patients": source.split(s)["patient_id"].n_unique()} for s in SPLITS}
    record = {
        "format": fmt,
        "dataset": source.meta.dataset,
        "task": source.meta.task,
        "class_names": list(source.class_names),
        "layout": source.meta.layout,
        "patient_level": source.meta.patient_level,
        "normalisation": source.meta.normalisation,
        "oncopipe_version": provenance.code_version()["version"],
        "export_params_hash": params_hash,
        "manifest_sha256": source.manifest_sha256,
        "manifest_params_hash": source.meta.params_hash,
        "shards_params_hash": source.shards_params_hash,
        "splits": counts,
        "not_in_shards": source.not_in_shards,
        "written": written,
    }
    (out_dir / "export.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n",
                                         encoding="utf-8")
