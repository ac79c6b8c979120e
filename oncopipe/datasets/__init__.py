"""Registry of datasets: the only place that maps a dataset name to its code.

Every dataset is a package ``oncopipe.datasets.<name>`` with the same three modules, so the
stage scripts and the generic stages never import a dataset by name:

- ``params``: ``TASKS``, ``CLASS_NAMES`` (task -> class names), ``PREDICT_INPUT`` (a
  :class:`PredictInput`: what one prediction takes, read by ``preprocess_one`` and
  ``oncopipe serve``), and the frozen pydantic dataclasses
  ``DemoParams`` and ``PrepareParams`` for the ``demo`` and ``prepare`` sections of
  ``params.yaml`` (see :mod:`oncopipe.settings`). It imports no processing
  code, so loading params (which every stage does) keeps each stage's import closure, and
  with it its DVC dependencies, small.
- ``demo``: ``write_demo(cfg, out_dir)`` writes synthetic data in the real raw layout from
  ``cfg.demo`` (same seed, same bytes).
- ``prepare``: ``prepare(cfg, out_dir)`` reads the raw data at ``cfg.raw`` and writes the
  common manifest and arrays (see :mod:`oncopipe.manifest`) into ``out_dir``;
  ``preprocess_one(cfg, path, point=None)`` gives one raw input exactly as ``prepare`` stores
  it (for ``oncopipe predict``).

The package's ``__init__`` holds only its docstring. tests/test_stage_deps.py checks that each
stage declares in dvc.yaml the modules it reaches through :func:`module`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

NAMES: tuple[str, ...] = ("lidc", "mosmed", "pcam", "isic", "breakhis")
Part = Literal["params", "demo", "prepare"]
PARTS: tuple[str, ...] = ("params", "demo", "prepare")


def module(name: str, part: Part) -> ModuleType:
    """Import ``part`` of dataset ``name`` (lazily: one dataset's imports stay its own)."""
    if name not in NAMES:
        raise KeyError(f"unknown dataset {name!r} (known: {', '.join(NAMES)})")
    if part not in PARTS:
        raise KeyError(f"unknown dataset module {part!r} (known: {', '.join(PARTS)})")
    return importlib.import_module(f"oncopipe.datasets.{name}.{part}")


@dataclass(frozen=True)
class PredictInput:
    """What ``oncopipe predict`` and ``oncopipe serve`` take as one input of a dataset (its
    params module's ``PREDICT_INPUT``), so both refuse what does not belong with one sentence.
    """

    kind: Literal["image", "volume", "series"]  # series: a folder of DICOM slices, zipped to upload
    suffixes: tuple[str, ...]  # file suffixes of the raw release
    formats: tuple[str, ...]  # as oncopipe.images.image_format names them
    expected: str  # the words that say what belongs, for the error message
    point: bool = False  # whether a point in patient mm goes with the input
