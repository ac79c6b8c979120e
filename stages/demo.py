"""DVC stage ``demo@<dataset>``: write synthetic data in the dataset's real raw layout."""

from __future__ import annotations

from pathlib import Path

from oncopipe import datasets, log, perf
from oncopipe.atomic import atomic_path
from oncopipe.errors import one_line_exit
from stages import dataset_name, housekeeping

READS = ("demo",)


@one_line_exit("demo")
@perf.measured("demo")
def main(argv: list[str] | None = None) -> None:
    name = dataset_name(argv)
    logger = log.setup(f"demo[{name}]")
    housekeeping()
    cfg = datasets.load_config(name, reads=READS)
    out = Path("data/demo") / name
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        datasets.spec(name).write_demo(cfg, tmp)
    n_files = sum(1 for p in out.rglob("*") if p.is_file())
    logger.info("wrote %d files to %s (seed %d)", n_files, out, cfg.demo.seed)
    perf.items(n_files, "files")


if __name__ == "__main__":
    main()
