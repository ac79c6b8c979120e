"""DVC stage ``train@<dataset>``: shards -> models/<dataset>/ + dvclive logs.

Several GPUs: set ``<dataset>.train.<profile>.nproc`` to N and the stage re-executes itself
under ``torchrun --standalone --nproc-per-node=N`` (one machine); or run that command yourself.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from oncopipe import config, perf, training
from oncopipe.cards import ShardSummary
from stages import stage

READS = ("seed", "task", "profile", "train")


def torchrun_argv(name: str, nproc: int) -> list[str]:
    """The command that runs this stage as ``nproc`` DDP processes on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", "-m", "stages.train", name]


@stage("train", READS)
def main(cfg: config.DatasetConfig, logger: logging.Logger) -> None:
    """Train the active profile's model on the shards into models/<dataset>/."""
    name = cfg.name
    if cfg.train.nproc > 1 and "WORLD_SIZE" not in os.environ:  # not yet under torchrun
        cmd = torchrun_argv(name, cfg.train.nproc)
        logger.info("nproc %d: re-executing as %s", cfg.train.nproc, " ".join(cmd))
        logging.shutdown()  # flush before exec replaces the process
        os.execv(sys.executable, cmd)
    card = training.train(cfg, Path("data/shards") / name, Path("models") / name,
                          Path("metrics") / name / "train")
    train = ShardSummary.read(Path("data/shards") / name).splits["train"].samples
    perf.items(card.epochs_run * train, "sample-epochs")


if __name__ == "__main__":
    main()
