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
    """The ``oncopipe`` modules ``module``'s code names in an import (``from pkg import x``:
    ``pkg``, and ``pkg.x`` when that is a module)."""
    path = module_file(module)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names, _ = _imports(path, package)
    found = {n for n in names if n.split(".")[0] == "oncopipe" and module_file(n) is not None}
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


# docs/architecture.md's rows, lowest first; registry and learn share a rank but not imports
LAYERS = {
    "core": (0, {"oncopipe", "config", "contract", "errors", "limits", "manifest", "arrays",
                 "report", "rawfiles", "images", "imagedump", "shards", "metrics", "atomic",
                 "parallel", "contact_sheet", "log", "perf", "workers", "input_warnings",
                 "intervals", "provenance", "datacard", "modelcard", "export", "settings",
                 "cards"}),
    "datasets": (1, set()),  # every oncopipe.datasets.<ds>...
    "registry": (2, {"datasets"}),
    "learn": (2, {"training", "distributed", "inference", "models", "loader", "augment",
                  "evaluation", "saliency"}),
    "apps": (3, {"predict", "serve", "cli", "gate", "results", "seeds"}),
}


def layer(module: str) -> str:
    if _dataset_of(module):
        return "datasets"
    short = module.removeprefix("oncopipe.").split(".")[0] if module != "oncopipe" else module
    found = [name for name, (_, members) in LAYERS.items() if short in members]
    assert len(found) == 1, f"{module}: put it in one row of LAYERS (and of the drawing)"
    return found[0]


@pytest.mark.parametrize("module", MODULES)
def test_imports_run_down_the_layers(module):
    mine = layer(module)
    rank = LAYERS[mine][0]
    up = sorted(m for m in direct(module)
                if layer(m) != mine and LAYERS[layer(m)][0] >= rank)
    assert not up, f"{module} ({mine}) imports {up}, not below it"


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
