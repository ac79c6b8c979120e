"""DVC stage ``prepare_<dataset>``: raw data -> common manifest + arrays in data/prepared/.

The dataset module writes into a scratch directory beside ``data/prepared/<dataset>``
(``.<dataset>.<pid>.*``; those of runs that were killed are removed first); each finished
file is then renamed into place, so no reader ever sees a half-written file, and
files other stages keep in the same directory (LIDC's lesion table) are left alone.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from oncopipe import datasets
from oncopipe.core import config, limits, perf
from oncopipe.core.atomic import scratch_dir
from oncopipe.core.errors import InputError
from stages import stage

READS = ("limits", "raw", "task", "prepare")


@stage("prepare", READS)
def main(cfg: config.DatasetConfig, logger: logging.Logger) -> None:
    """Read the raw data into data/prepared/<dataset> (manifest + arrays)."""
    name = cfg.name
    limits.activate(cfg.limits)
    if not cfg.raw.exists():
        raise InputError(f"{cfg.raw}: raw data not found (set {name}.raw in params.yaml)")
    out = Path("data/prepared") / name
    logger.info("reading %s", cfg.raw)
    out.parent.mkdir(parents=True, exist_ok=True)
    with scratch_dir(out.parent, name) as tmp:  # also removes those of killed runs
        datasets.spec(name).prepare(cfg, tmp)
        out.mkdir(parents=True, exist_ok=True)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        for file in files:
            dest = out / file.relative_to(tmp)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, dest)
    logger.info("moved %d finished file(s) into %s", len(files), out)
    perf.items(perf.rows(out / "manifest.parquet"), "samples")


if __name__ == "__main__":
    main()
