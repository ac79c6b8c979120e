"""DVC stage ``evaluate@<dataset>``: the test split -> metrics/<dataset>/ (metrics, plots)."""

from __future__ import annotations

import logging
from pathlib import Path

from oncopipe.core import config, perf
from oncopipe.evaluate import evaluation
from stages import stage

READS = ("seed", "profile", "train", "evaluate")


@stage("evaluate", READS)
def main(cfg: config.DatasetConfig, logger: logging.Logger) -> None:
    """Evaluate the trained model on the test split into metrics/<dataset>/."""
    name = cfg.name
    result = evaluation.evaluate(cfg, Path("data/shards") / name, Path("models") / name,
                                 Path("metrics") / name)
    perf.items(result["n_test"], "samples")


if __name__ == "__main__":
    main()
