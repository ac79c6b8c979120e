"""DVC stage ``prepare_<dataset>``: raw data -> common manifest + arrays in data/prepared/."""

from __future__ import annotations

import sys
from pathlib import Path

from oncopipe import config, datasets, log
from oncopipe.atomic import atomic_path


def main(argv: list[str] | None = None) -> None:
    (name,) = argv if argv is not None else sys.argv[1:]
    logger = log.setup(f"prepare[{name}]")
    cfg = config.load(name)
    if not cfg.raw.exists():
        raise SystemExit(f"{cfg.raw}: raw data not found (params.yaml {name}.raw)")
    out = Path("data/prepared") / name
    logger.info("reading %s", cfg.raw)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        datasets.get(name).prepare(cfg, tmp)


if __name__ == "__main__":
    main()
