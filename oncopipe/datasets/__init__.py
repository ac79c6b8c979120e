"""Registry of datasets: the only place that maps a dataset name to its module.

Each dataset module holds all knowledge of one dataset and exposes the same interface, so
the stage scripts and the generic stages never import a dataset by name:

- ``TASKS``: tuple of task names accepted in ``<dataset>.task``.
- ``DemoParams``, ``PrepareParams``: frozen dataclasses for the ``demo`` and ``prepare``
  sections of ``params.yaml`` (validated by :func:`oncopipe.config.build`).
- ``write_demo(cfg, out_dir)``: write synthetic data in the real raw layout, from
  ``cfg.demo`` (same seed, same bytes).
- ``prepare(cfg, out_dir)``: read the raw data at ``cfg.raw`` and write the common manifest
  and arrays (see :mod:`oncopipe.manifest`) into ``out_dir``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

NAMES: tuple[str, ...] = ("lidc", "mosmed", "pcam", "isic", "breakhis")


def get(name: str) -> ModuleType:
    """Import the module of dataset ``name`` (lazily, so one dataset's imports stay its own)."""
    if name not in NAMES:
        raise KeyError(f"unknown dataset {name!r} (known: {', '.join(NAMES)})")
    return importlib.import_module(f"oncopipe.datasets.{name}")
