"""DVC stage ``evaluate@<dataset>``: the test split -> metrics/<dataset>/ (metrics, plots), and
the model card beside the weights (models/<dataset>/MODELCARD.md, modelcard.json)."""

from __future__ import annotations

import logging
from pathlib import Path

from oncopipe import datasets
from oncopipe.core import config, perf
from oncopipe.core.cards import ShardSummary
from oncopipe.evaluate import evaluation, modelcard
from stages import stage

READS = ("seed", "profile", "train", "evaluate")


@stage("evaluate", READS)
def main(cfg: config.DatasetConfig, logger: logging.Logger) -> None:
    """Evaluate the trained model on the test split into metrics/<dataset>/; write its card."""
    name = cfg.name
    shards, model_dir, out = (Path("data/shards") / name, Path("models") / name,
                              Path("metrics") / name)
    result = evaluation.evaluate(cfg, shards, model_dir, out)
    card = modelcard.write(model_dir, result, ShardSummary.read(shards),
                           datasets.spec(name).provenance, cfg.evaluate.calibration_bins,
                           (out / "metrics.json").as_posix())
    logger.info("wrote the model card %s (%s)", model_dir / modelcard.MODEL_CARD_MD, card.title)
    perf.items(result["n_test"], "samples")


if __name__ == "__main__":
    main()
