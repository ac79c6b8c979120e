"""DVC stage ``lidc_lesions``: raw LIDC-IDRI -> data/prepared/lidc/lesions.parquet.

Headers and XML only (no pixels): one row per physical lesion, plus ``lesions_slices.parquet``
(the slices of those series and where their pixels are, so ``prepare_lidc`` reads no header
again), ``lesions_rejects.parquet`` and ``lesions_report.json`` accounting for every raw
file. See oncopipe/datasets/lidc/lesions.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.parquet as pq

from oncopipe import config, log
from oncopipe.atomic import atomic_path
from oncopipe.datasets.lidc import lesions, slice_table
from oncopipe.errors import InputError, one_line_exit

READS = ("raw", "prepare.cohort", "prepare.grouping", "prepare.lesion_table",
         "prepare.workers")


@one_line_exit("lidc_lesions")
def main(argv: list[str] | None = None) -> None:
    if argv if argv is not None else sys.argv[1:]:
        raise SystemExit("usage: python -m stages.lidc_lesions")
    logger = log.setup("lidc_lesions")
    cfg = config.load("lidc", reads=READS)
    if not cfg.raw.exists():
        raise InputError(f"{cfg.raw}: raw data not found (set lidc.raw in params.yaml)")
    table, slices, report = lesions.build_tables(cfg.raw, cfg.prepare, cfg.params_hash)
    out = Path(cfg.prepare.lesion_table)
    for frame, path in ((table, out), (slices, slice_table.path_for(out))):
        with atomic_path(path) as tmp:
            pq.write_table(frame.to_arrow(), tmp, compression="zstd")
        report.wrote(path.name)
    report.write(out.parent, prefix="lesions_")
    logger.info("wrote %d lesions to %s", len(table), out)


if __name__ == "__main__":
    main()
