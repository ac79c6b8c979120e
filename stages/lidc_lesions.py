"""DVC stage ``lidc_lesions``: raw LIDC-IDRI -> data/prepared/lidc/lesions.parquet.

Headers and XML only (no pixels): one row per physical lesion, plus ``lesions_rejects.parquet``
and ``lesions_report.json`` accounting for every raw file. See oncopipe/datasets/lidc/lesions.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.parquet as pq

from oncopipe import config, log
from oncopipe.atomic import atomic_path
from oncopipe.datasets.lidc import lesions


def main(argv: list[str] | None = None) -> None:
    if argv if argv is not None else sys.argv[1:]:
        raise SystemExit("usage: python -m stages.lidc_lesions")
    logger = log.setup("lidc_lesions")
    cfg = config.load("lidc")
    if not cfg.raw.exists():
        raise SystemExit(f"{cfg.raw}: raw data not found (params.yaml lidc.raw)")
    table, report = lesions.build(cfg.raw, cfg.prepare, lesions.lesion_params_hash(cfg.prepare))
    out = Path(cfg.prepare.lesion_table)
    with atomic_path(out) as tmp:
        pq.write_table(table.to_arrow(), tmp, compression="zstd")
    report.wrote(out.name)
    report.write(out.parent, prefix="lesions_")
    logger.info("wrote %d lesions to %s", len(table), out)


if __name__ == "__main__":
    main()
