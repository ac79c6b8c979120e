"""DVC stage ``nnunet_mosmed``: MosMedData's masked studies as an nnU-Net v2 raw dataset.

data/exports/nnUNet_raw/Dataset502_MosMedData/ (oncopipe/export/nnunet.py): the studies the
release ships a lesion mask for, read again from ``mosmed.raw`` at native resolution, in the
shards' patient-level split; ``export.json`` counts them and records each unusable one.
Point ``nnUNet_raw`` at data/exports/nnUNet_raw to use it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from oncopipe.core import config, limits, perf
from oncopipe.datasets.mosmed import nnunet as mosmed_nnunet
from oncopipe.datasets.mosmed.params import PROVENANCE
from oncopipe.export import nnunet, source
from stages import stage

READS = ("limits", "raw")
OUT_ROOT = Path("data/exports/nnUNet_raw")


@stage("nnunet_mosmed", READS, dataset="mosmed")
def main(cfg: config.DatasetConfig, logger: logging.Logger) -> None:
    """Write the masked studies of mosmed.raw as an nnU-Net raw dataset."""
    limits.activate(cfg.limits)
    src = source.load(Path("data/prepared/mosmed"), Path("data/shards/mosmed"))
    out = OUT_ROOT / nnunet.folder_name(mosmed_nnunet.DATASET_ID, mosmed_nnunet.NAME)
    rejects: list[tuple[str, str]] = []
    about = {"name": mosmed_nnunet.NAME, "description": "MosMedData studies with the lesion "
             "masks the release ships; fold 0 of splits_final.json is the pipeline's "
             "patient-level train/val split", "reference": PROVENANCE.citation,
             "licence": PROVENANCE.licence, "release": PROVENANCE.release}
    counts = nnunet.write(mosmed_nnunet.cases(cfg.raw, src, rejects), out, "CT",
                          mosmed_nnunet.LABELS, about)
    nnunet.write_record(out, "mosmed", counts, rejects, src, cfg.params_hash)
    logger.info("wrote %s: %s cases, %d rejected", out, counts, len(rejects))
    perf.items(sum(counts.values()), "cases")


if __name__ == "__main__":
    main()
