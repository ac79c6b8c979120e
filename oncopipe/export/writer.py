"""Write the formats a dataset's ``export`` params ask for, each in its own folder."""

from __future__ import annotations

import logging
from pathlib import Path

from oncopipe.core.atomic import atomic_path
from oncopipe.core.cards import ShardSummary
from oncopipe.core.config import ExportParams
from oncopipe.core.contract import Provenance
from oncopipe.export import datacard, hf, medmnist, monai, record, source, webdataset

WRITERS = {"monai": monai.write, "medmnist": medmnist.write, "hf": hf.write,
           "webdataset": webdataset.write}

log = logging.getLogger(__name__)


def export(prepared: Path, shard_dir: Path, out_dir: Path, params: ExportParams,
           params_hash: str, release: Provenance | None) -> dict:
    """Replace ``out_dir`` by ``<format>/`` folders and the data card; return the sample
    count and what each format wrote."""
    src = source.load(prepared, shard_dir)
    log.info("exporting %d samples of %s (%d not in the shards)", len(src.table),
             src.meta.dataset, src.not_in_shards)
    result = {}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        for fmt in params.formats:
            folder = tmp / fmt
            folder.mkdir()
            written = WRITERS[fmt](src, folder, params)
            record.write(src, folder, fmt, params_hash, written)
            result[fmt] = written
            log.info("wrote %s: %s", fmt, written)
        card = datacard.build(src, datacard.read_report(prepared),
                              ShardSummary.read(shard_dir).model_dump(mode="json"), release)
        datacard.write(card, tmp)
    return {"samples": len(src.table), "formats": result}
