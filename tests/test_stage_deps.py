"""Declared = used: every stage's dvc.yaml deps cover exactly the code it runs, and its
``params:`` list names exactly the keys it reads.

dvc.yaml lists each stage's code by hand, as a few folders (oncopipe's layers) and files. The
code a stage runs is the import closure of its ``python -m`` module, computed from the source
with ``ast`` (imports inside functions included), plus the dataset modules it reaches through
the registry (the dataset's ``SPEC`` and the parts it calls as ``datasets.spec(name).<part>``)
for that stage's dataset (tests/stage_closure.py). Every file of the closure must lie in a
declared folder or be a declared file (else an edit to it would not rerun the stage), and
every declared folder or file must hold some of it (else an edit there would rerun the stage
for nothing). The params side: each stage script's ``READS`` (enforced at run time by
:func:`oncopipe.core.config.load`) must be its ``params:`` list.
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

import pytest
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo
from stage_closure import ROOT, closure, is_code, stage_dataset, stage_module

from oncopipe import datasets
from oncopipe.core import config


@cache
def stages() -> list:
    with Repo(str(ROOT)) as repo:
        return [s for s in repo.index.stages if s.cmd]


def _stage_dataset(name: str) -> str | None:
    return stage_dataset(name, datasets.NAMES)


def _code_deps(stage) -> list[Path]:
    return [Path(d.fs_path) for d in stage.deps if not isinstance(d, ParamsDependency)
            and Path(d.fs_path).resolve().is_relative_to(ROOT)
            and is_code(Path(d.fs_path).resolve().relative_to(ROOT).as_posix())]


def _stage_ids() -> list[str]:
    return [s.addressing for s in stages()]


def test_every_dataset_has_its_stages():
    names = set(_stage_ids())
    for ds in datasets.NAMES:
        for stage in (f"demo@{ds}", f"prepare_{ds}", f"shard@{ds}", f"train@{ds}",
                      f"evaluate@{ds}"):
            assert stage in names


@pytest.mark.parametrize("address", _stage_ids())
def test_code_deps_are_the_import_closure(address):
    stage = next(s for s in stages() if s.addressing == address)
    used = closure(stage_module(stage.cmd), _stage_dataset(address))
    deps = [d.resolve() for d in _code_deps(stage)]

    def covered(f: Path) -> bool:
        return any(f == d or f.is_relative_to(d) for d in deps)

    missing = sorted(str(f.relative_to(ROOT)) for f in used if not covered(f))
    assert not missing, f"{address}: runs code that dvc.yaml does not declare: {missing}"
    unused = sorted(str(d.relative_to(ROOT)) for d in deps
                    if not any(f == d or f.is_relative_to(d) for f in used))
    assert not unused, f"{address}: declares code deps it does not run: {unused}"
    inside = sorted(str(d.relative_to(ROOT)) for d in deps
                    if any(d != o and d.is_relative_to(o) for o in deps))
    assert not inside, f"{address}: declares deps inside another declared folder: {inside}"


@pytest.mark.parametrize("address", [a for a in _stage_ids() if not a.startswith("train@")])
def test_an_edit_to_the_training_loop_reruns_only_train_stages(address):
    stage = next(s for s in stages() if s.addressing == address)
    loop = (ROOT / "oncopipe" / "train" / "training.py").resolve()
    assert loop.is_file()
    assert not any(loop.is_relative_to(d.resolve()) for d in _code_deps(stage)), address


@pytest.mark.parametrize("address", _stage_ids())
def test_params_are_what_the_stage_reads(address):
    stage = next(s for s in stages() if s.addressing == address)
    dataset = _stage_dataset(address)
    reads = importlib.import_module(stage_module(stage.cmd)).READS
    expected = {key if key in config.TOP_KEYS else f"{dataset}.{key}" for key in reads}
    declared = {key for d in stage.deps if isinstance(d, ParamsDependency) for key in d.params}
    assert declared == expected, f"{address}: params {sorted(declared)} != reads {sorted(expected)}"


def test_closure_follows_registry_and_function_level_imports():
    files = {str(f.relative_to(ROOT)) for f in closure("stages.shard", "lidc")}
    assert "oncopipe/core/config.py" in files and "oncopipe/datasets/__init__.py" in files
    assert "oncopipe/datasets/lidc/params.py" in files  # config.load -> registry -> params
    assert not any(f.startswith("oncopipe/datasets/lidc/") and f.endswith(("crops.py",
                                                                          "series.py"))
                   for f in files), "loading params must not import LIDC's processing code"


def test_closure_follows_the_parts_a_stage_calls_through_the_spec():
    demo = {str(f.relative_to(ROOT)) for f in closure("stages.demo", "pcam")}
    prepare = {str(f.relative_to(ROOT)) for f in closure("stages.prepare", "pcam")}
    assert "oncopipe/datasets/pcam/demo.py" in demo
    assert "oncopipe/datasets/pcam/prepare.py" not in demo  # declared in SPEC, never called
    assert "oncopipe/datasets/pcam/prepare.py" in prepare
    assert "oncopipe/datasets/pcam/demo.py" not in prepare


def test_dvc_yaml_stays_readable():
    """dvc.yaml is written by hand and read in a minute: no generated block, under 150 lines."""
    text = (ROOT / "dvc.yaml").read_text()
    assert "generated" not in text.lower()
    assert len(text.splitlines()) < 150, "dvc.yaml grew past 150 lines: fold deps into folders"
