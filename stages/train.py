"""DVC stage ``train@<dataset>``: shards -> models/<dataset>/ + dvclive logs.

Several GPUs: ``torchrun --nproc-per-node=N -m stages.train <dataset>``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from oncopipe import config, log, training
from oncopipe.errors import one_line_exit

READS = ("seed", "task", "profile", "train")


@one_line_exit("train")
def main(argv: list[str] | None = None) -> None:
    (name,) = argv if argv is not None else sys.argv[1:]
    log.setup(f"train[{name}]")
    cfg = config.load(name, reads=READS)
    training.train(cfg, Path("data/shards") / name, Path("models") / name,
                   Path("metrics") / name / "train")


if __name__ == "__main__":
    main()
