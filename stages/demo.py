"""DVC stage ``demo@<dataset>``: write synthetic data in the dataset's real raw layout."""

from __future__ import annotations

import logging
from pathlib import Path

from oncopipe import datasets
from oncopipe.core import config, perf
from oncopipe.core.atomic import atomic_path
from stages import stage

READS = ("demo",)


@stage("demo", READS)
def main(cfg: config.DatasetConfig, logger: logging.Logger) -> None:
    """Write the synthetic raw tree of the dataset to data/demo/<dataset>."""
    out = Path("data/demo") / cfg.name
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        datasets.spec(cfg.name).write_demo(cfg, tmp)
    n_files = sum(1 for p in out.rglob("*") if p.is_file())
    logger.info("wrote %d files to %s (seed %d)", n_files, out, cfg.demo.seed)
    perf.items(n_files, "files")


if __name__ == "__main__":
    main()
