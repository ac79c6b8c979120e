"""DVC stage ``shard@<dataset>``: manifest + arrays -> patient-level balanced HDF5 shards."""

from __future__ import annotations

from pathlib import Path

from oncopipe import datasets, log, perf, provenance, shards
from oncopipe.errors import one_line_exit
from stages import dataset_name, housekeeping

READS = ("seed", "raw", "shard")


@one_line_exit("shard")
@perf.measured("shard")
def main(argv: list[str] | None = None) -> None:
    name = dataset_name(argv)
    log.setup(f"shard[{name}]")
    housekeeping()
    cfg = datasets.load_config(name, reads=READS)
    prepared = Path("data/prepared") / name
    raw = provenance.raw_source(name, cfg.raw, prepared / "manifest.parquet")
    summary = shards.write_shards(prepared, Path("data/shards") / name, cfg.shard, cfg.seed,
                                  cfg.params_hash, raw)
    perf.items(summary["manifest_samples"], "samples")


if __name__ == "__main__":
    main()
