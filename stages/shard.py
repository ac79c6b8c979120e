"""DVC stage ``shard@<dataset>``: manifest + arrays -> patient-level balanced HDF5 shards."""

from __future__ import annotations

import logging
from pathlib import Path

from oncopipe.core import config, perf, provenance
from oncopipe.shard import shards
from stages import stage

READS = ("seed", "raw", "shard")


@stage("shard", READS)
def main(cfg: config.DatasetConfig, logger: logging.Logger) -> None:
    """Split, balance and pack data/prepared/<dataset> into data/shards/<dataset>."""
    prepared = Path("data/prepared") / cfg.name
    raw = provenance.raw_source(cfg.name, cfg.raw, prepared / "manifest.parquet")
    summary = shards.write_shards(prepared, Path("data/shards") / cfg.name, cfg.shard, cfg.seed,
                                  cfg.params_hash, raw)
    perf.items(summary.manifest_samples, "samples")


if __name__ == "__main__":
    main()
