"""DVC stage ``shard@<dataset>``: manifest + arrays -> patient-level balanced HDF5 shards."""

from __future__ import annotations

import logging
from pathlib import Path

from oncopipe import config, perf, shards
from stages import stage

READS = ("seed", "shard")


@stage("shard", READS)
def main(cfg: config.DatasetConfig, logger: logging.Logger) -> None:
    """Split, balance and pack data/prepared/<dataset> into data/shards/<dataset>."""
    summary = shards.write_shards(Path("data/prepared") / cfg.name, Path("data/shards") / cfg.name,
                                  cfg.shard, cfg.seed, cfg.params_hash)
    perf.items(summary.manifest_samples, "samples")


if __name__ == "__main__":
    main()
