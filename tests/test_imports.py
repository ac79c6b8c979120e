"""Import rules: which part of ``oncopipe`` may import which, checked on the source with ``ast``
(imports inside functions included, transitively).

- Running a model is apart from training it: evaluation, prediction and the web app reach
  nothing of the training loop or augmentation; :mod:`oncopipe.inference` (below) reaches
  neither :mod:`oncopipe.distributed` nor training, and :mod:`oncopipe.distributed` not
  training.
- The settings layer and the dataset contract sit below the registry: ``config`` and
  ``contract`` reach nothing of ``oncopipe.datasets``.
- Generic code knows no dataset: no module outside ``oncopipe/datasets/<ds>/`` imports a
  dataset package (the registry reaches them by name, through each one's ``SPEC``), and no
  dataset imports another.
"""

from __future__ import annotations

from functools import cache

import pytest
from stage_closure import ROOT, _imports, module_file

from oncopipe import datasets

PACKAGE = ROOT / "oncopipe"


def _name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(_name(p) for p in PACKAGE.rglob("*.py"))


@cache
def direct(module: str) -> frozenset[str]:
    """The ``oncopipe`` modules ``module`` imports (a package's ``__init__`` included)."""
    path = module_file(module)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names, _ = _imports(path, package)
    found = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            candidate = ".".join(parts[:i])
            if candidate.startswith("oncopipe") and module_file(candidate) is not None:
                found.add(candidate)
    found.discard(module)
    return frozenset(found)


@cache
def reach(module: str) -> frozenset[str]:
    """Every ``oncopipe`` module importing ``module`` runs (transitively)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        for name in direct(todo.pop()):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return frozenset(seen)


def _dataset_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["oncopipe", "datasets"] else None


RUNNING = ["oncopipe.evaluation", "oncopipe.predict", "oncopipe.inference",
           *(m for m in MODULES if m.startswith("oncopipe.serve"))]


@pytest.mark.parametrize("module", RUNNING)
def test_running_a_model_reaches_nothing_of_training(module):
    bad = reach(module) & {"oncopipe.training", "oncopipe.augment"}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_inference_below_distributed_below_training():
    assert not reach("oncopipe.inference") & {"oncopipe.distributed", "oncopipe.training"}
    assert "oncopipe.training" not in reach("oncopipe.distributed")
    assert {"oncopipe.inference", "oncopipe.distributed"} <= direct("oncopipe.training")


@pytest.mark.parametrize("module", ["oncopipe.config", "oncopipe.contract"])
def test_settings_and_contract_sit_below_the_registry(module):
    bad = sorted(m for m in reach(module) if m.startswith("oncopipe.datasets"))
    assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("module", MODULES)
def test_no_generic_module_imports_a_dataset(module):
    own = _dataset_of(module)
    bad = sorted(m for m in direct(module) if _dataset_of(m) not in (None, own))
    assert not bad, f"{module} imports dataset code {bad}"


def test_the_rules_see_every_dataset_and_an_import():
    assert {_dataset_of(m) for m in MODULES} - {None} == set(datasets.NAMES)
    assert "oncopipe.datasets.pcam.params" in direct("oncopipe.datasets.pcam")
    assert "oncopipe.config" in reach("oncopipe.datasets.pcam.prepare")
    assert {"oncopipe.augment", "oncopipe.loader"} <= reach("oncopipe.training")
