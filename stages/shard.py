"""DVC stage ``shard@<dataset>``: manifest + arrays -> patient-level balanced HDF5 shards."""

from __future__ import annotations

from pathlib import Path

from oncopipe import config, log, perf, shards
from oncopipe.errors import one_line_exit
from stages import dataset_name, housekeeping

READS = ("seed", "shard")


@one_line_exit("shard")
@perf.measured("shard")
def main(argv: list[str] | None = None) -> None:
    name = dataset_name(argv)
    log.setup(f"shard[{name}]")
    housekeeping()
    cfg = config.load(name, reads=READS)
    summary = shards.write_shards(Path("data/prepared") / name, Path("data/shards") / name,
                                  cfg.shard, cfg.seed, cfg.params_hash)
    perf.items(summary["manifest_samples"], "samples")


if __name__ == "__main__":
    main()
