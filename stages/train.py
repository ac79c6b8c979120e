"""DVC stage ``train@<dataset>``: shards -> models/<dataset>/ + dvclive logs.

Several GPUs: set ``<dataset>.train.<profile>.nproc`` to N and the stage re-executes itself
under ``torchrun --standalone --nproc-per-node=N`` (one machine); or run that command yourself.
Several machines: ``nnodes: M`` as well, and ``ONCOPIPE_RDZV=host:port`` in the environment of
the stage on every machine (an environment variable: where training runs is no param); each
machine runs the stage and they meet at that c10d rendezvous.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from oncopipe.core import config, perf
from oncopipe.core.cards import ShardSummary
from oncopipe.core.errors import InputError
from oncopipe.train import training
from stages import stage

READS = ("seed", "task", "profile", "train")
RDZV_ENV = "ONCOPIPE_RDZV"


def torchrun_argv(name: str, nproc: int, nnodes: int = 1, rdzv: str = "") -> list[str]:
    """The command that runs this stage as ``nproc`` DDP processes on each of ``nnodes``
    machines (``--standalone`` on one; a c10d rendezvous at ``rdzv`` across several)."""
    where = (["--standalone"] if nnodes == 1 else
             [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv}",
              f"--rdzv-id=oncopipe-train-{name}"])
    return [sys.executable, "-m", "torch.distributed.run", *where,
            f"--nproc-per-node={nproc}", "-m", "stages.train", name]


@stage("train", READS)
def main(cfg: config.DatasetConfig, logger: logging.Logger) -> None:
    """Train the active profile's model on the shards into models/<dataset>/."""
    name = cfg.name
    p = cfg.train
    if (p.nproc > 1 or p.nnodes > 1) and "WORLD_SIZE" not in os.environ:  # not yet torchrun
        rdzv = os.environ.get(RDZV_ENV, "").strip()
        if p.nnodes > 1 and not rdzv:
            raise InputError(f"{name}.train: nnodes {p.nnodes} needs {RDZV_ENV}=host:port (the "
                             "rendezvous every machine's stage meets at) in the environment")
        cmd = torchrun_argv(name, p.nproc, p.nnodes, rdzv)
        logger.info("nproc %d, nnodes %d: re-executing as %s", p.nproc, p.nnodes, " ".join(cmd))
        logging.shutdown()  # flush before exec replaces the process
        os.execv(sys.executable, cmd)
    card = training.train(cfg, Path("data/shards") / name, Path("models") / name,
                          Path("metrics") / name / "train")
    train = ShardSummary.read(Path("data/shards") / name).splits["train"].samples
    perf.items(card.epochs_run * train, "sample-epochs")


if __name__ == "__main__":
    main()
