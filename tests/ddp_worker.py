"""One DDP rank of the torchrun tests (tests/test_ddp.py): trains on tiny shards, on CPU (gloo).

``python -m torch.distributed.run --nproc-per-node=2 tests/ddp_worker.py SHARDS OUT [--sulk]``,
with ``tests/`` on ``PYTHONPATH``.

Each rank writes ``OUT/rank<r>.pt`` (its final weights) and ``OUT/rank<r>.json`` (the card
``training.train`` returned). ``--sulk`` makes rank 1's *own* validation figures never improve
after the first epoch: were a rank to act on its own figures it would stop early while rank 0
went on, and the next collective would hang. Rank 0 computes real figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import torch
from synthetic_data import SMALL_TRAIN, config_for

from oncopipe.core import log
from oncopipe.learn import models
from oncopipe.train import training

EPOCHS = 4
PATIENCE = 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("shards", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--sulk", action="store_true")
    args = ap.parse_args()
    rank = int(os.environ["RANK"])
    log.setup(f"ddp-worker[{rank}]")  # the epochs in the test's failure output
    if args.sulk and rank == 1:
        def never_better(prob, y, weight):
            return {"loss": 1.0, "accuracy": 0.0, "balanced_accuracy": 0.0}
        training.validation_metrics = never_better

    built = []
    build = models.build

    def keep(*a, **kw):  # the trained model object, to write each rank's own final weights
        built.append(build(*a, **kw))
        return built[-1]

    models.build = keep
    p = dataclasses.replace(SMALL_TRAIN, epochs=EPOCHS, patience=PATIENCE, schedule="none")
    card = training.train(config_for(p), args.shards, args.out / "model", args.out / "live")
    torch.save(built[0].state_dict(), args.out / f"rank{rank}.pt")
    (args.out / f"rank{rank}.json").write_text(card.to_json())


if __name__ == "__main__":
    main()
