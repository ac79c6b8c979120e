"""Registry of datasets: the only place that maps a dataset name to its code.

Every dataset is a package ``oncopipe.datasets.<name>`` whose ``__init__`` declares
``SPEC``, a :class:`oncopipe.core.contract.DatasetSpec` (tasks, class names, settings classes,
what one prediction takes, and its processing parts as lazy references). :func:`spec`
resolves a name to it; :func:`load_config` hands its settings classes to
:func:`oncopipe.core.config.load`, so the settings layer imports nothing of the datasets.

Resolving a spec imports the dataset's ``__init__`` and ``params`` modules only (no
processing code), which keeps each stage's import closure, and with it its DVC code deps,
small; a processing part is imported when it is first called. tests/stage_closure.py follows
``datasets.spec(name).<part>`` to the part's module.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from oncopipe.core import config
from oncopipe.core.contract import DatasetSpec
from oncopipe.core.errors import ParamsError

NAMES: tuple[str, ...] = ("lidc", "mosmed", "pcam", "isic", "breakhis")


def spec(name: str) -> DatasetSpec:
    """The declared contract of dataset ``name``."""
    if name not in NAMES:
        raise KeyError(f"unknown dataset {name!r} (known: {', '.join(NAMES)})")
    declared = getattr(importlib.import_module(f"{__name__}.{name}"), "SPEC", None)
    if not isinstance(declared, DatasetSpec) or declared.name != name:
        raise TypeError(f"oncopipe.datasets.{name}: SPEC must be a DatasetSpec named {name!r}")
    return declared


def load_config(name: str, path: Path = config.PARAMS_FILE, reads: tuple[str, ...] | None = None
                ) -> config.DatasetConfig:
    """``params.yaml``'s validated config of dataset ``name`` (see
    :func:`oncopipe.core.config.load`; ``reads``: the keys the calling stage declares)."""
    if name not in NAMES:
        raise ParamsError(f"{name}: unknown dataset (known: {', '.join(NAMES)})")
    return config.load(spec(name), NAMES, path, reads)
