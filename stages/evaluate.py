"""DVC stage ``evaluate@<dataset>``: the test split -> metrics/<dataset>/ (metrics, plots)."""

from __future__ import annotations

from pathlib import Path

from oncopipe import datasets, evaluation, log, perf
from oncopipe.errors import one_line_exit
from stages import dataset_name, housekeeping

READS = ("seed", "profile", "train", "evaluate")


@one_line_exit("evaluate")
@perf.measured("evaluate")
def main(argv: list[str] | None = None) -> None:
    name = dataset_name(argv)
    log.setup(f"evaluate[{name}]")
    housekeeping()
    cfg = datasets.load_config(name, reads=READS)
    result = evaluation.evaluate(cfg, Path("data/shards") / name, Path("models") / name,
                                 Path("metrics") / name)
    perf.items(result["n_test"], "samples")


if __name__ == "__main__":
    main()
