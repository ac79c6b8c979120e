"""Logging set-up shared by the stage scripts: timestamps, stage name, INFO by default."""

from __future__ import annotations

import logging
import os


def setup(stage: str) -> logging.Logger:
    logging.basicConfig(
        level=os.environ.get("ONCOPIPE_LOG", "INFO").upper(),
        format=f"%(asctime)s {stage} %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return logging.getLogger(stage)
