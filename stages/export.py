"""DVC stage ``export@<dataset>``: prepared arrays + shards' split -> data/exports/<dataset>/.

One folder per format of ``<dataset>.export.formats`` (docs/exports.md), each with
``export.json`` (what made it) and ``samples.csv`` (sample -> patient -> split), and the
dataset's data card (``DATACARD.md``, ``datacard.json``).
"""

from __future__ import annotations

from pathlib import Path

from oncopipe import datasets
from oncopipe.core import log, perf
from oncopipe.core.errors import one_line_exit
from oncopipe.export import writer
from stages import dataset_name, housekeeping

READS = ("export",)


@one_line_exit("export")
@perf.measured("export")
def main(argv: list[str] | None = None) -> None:
    name = dataset_name(argv)
    log.setup(f"export[{name}]")
    housekeeping()
    cfg = datasets.load_config(name, reads=READS)
    out = writer.export(Path("data/prepared") / name, Path("data/shards") / name,
                        Path("data/exports") / name, cfg.export, cfg.params_hash,
                        datasets.spec(name).provenance)
    perf.items(out["samples"], "samples")


if __name__ == "__main__":
    main()
