"""The generic stages under DVC, in a copy of the project: repro, a two-value sweep, the gate.

Runs the generic stages of the real ``dvc.yaml`` and the stage scripts on a small synthetic
manifest placed where a dataset's prepare stage would put it (``data/prepared/pcam``: the
generic stages read only the manifest, so which registered name carries it does not matter).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from dvc_project import DvcProject
from synthetic_data import make_prepared

from oncopipe import cli

pytestmark = pytest.mark.process  # minutes: not in the default run, .ci/run runs it

ROOT = Path(__file__).resolve().parents[1]
DS = "pcam"
CHAIN = [f"shard@{DS}", f"train@{DS}", f"evaluate@{DS}"]
DEP_COLUMNS = "^(oncopipe|stages|data|models)/"  # as in the README


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> DvcProject:
    # the generic stages of the real dvc.yaml; the prepared data stands in for prepare's output
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    generic = {k: v for k, v in pipeline["stages"].items() if k in ("shard", "train", "evaluate")}
    project = DvcProject(tmp_path_factory.mktemp("project"), {"stages": generic})
    root, params = project.root, project.params
    params["datasets"] = [DS]
    params[DS]["shard"] = {"ratios": [0.6, 0.2, 0.2], "balance": "undersample",
                           "shard_size": 16}
    params[DS]["train"]["demo"] = {"model": "lenet5", "width": 0.5, "epochs": 2,
                                   "batch_size": 16, "lr": 1.0e-3, "threads": 1}
    params[DS]["profile"] = "demo"
    params[DS]["evaluate"] = {"bootstrap": 50}
    project.write_params()
    make_prepared(root / "data" / "prepared" / DS, (10, 8), 2, size=16)
    project.commit()
    return project


@pytest.mark.slow
def test_repro_sweep_and_gate(project):
    project.run("dvc", "repro", "--single-item", *CHAIN)
    metrics = json.loads((project.root / "metrics" / DS / "metrics.json").read_text())
    assert {"accuracy", "auc", "ci", "per_class"} <= set(metrics)
    assert (project.root / "models" / DS / "model.pt").is_file()
    card = json.loads((project.root / "models" / DS / "modelcard.json").read_text())
    assert card["test"]["accuracy"]["value"] == metrics["accuracy"]  # evaluate's, beside it
    assert (project.root / "metrics" / DS / "train" / "metrics.json").is_file()

    for lr in ("2.0e-3", "4.0e-3"):
        project.run("dvc", "exp", "run", "--single-item", "-S", f"{DS}.train.demo.lr={lr}",
              *CHAIN)
    shown = json.loads(project.run("dvc", "exp", "show", "--json"))
    experiments = [e for rev in shown for e in (rev.get("experiments") or [])]
    lrs = sorted(
        e["revs"][0]["data"]["params"]["params.yaml"]["data"][DS]["train"]["demo"]["lr"]
        for e in experiments)
    assert lrs == [2.0e-3, 4.0e-3]
    # the one-parameter sweep fits a terminal (the README's command, which drops DVC's
    # columns of dependency hashes): the parameter, the headline test figures and the kept
    # epoch's validation figures; no timings, no interval or per-class detail
    header = project.run("dvc", "exp", "show", "--only-changed", "--drop", DEP_COLUMNS,
                         "--csv").splitlines()[0]
    columns = header.split(",")
    assert f"{DS}.train.demo.lr" in columns and "balanced_accuracy" in columns
    assert not any("seconds" in c or "ci." in c or "per_class" in c or "/" in c
                   for c in columns)
    assert len(columns) <= 20, " | ".join(columns)

    thresholds = project.root / "metrics" / "thresholds.yaml"
    value = json.loads((project.root / "metrics" / DS / "metrics.json").read_text())["accuracy"]
    args = ["gate", "--thresholds", str(thresholds),
            "--metrics-dir", str(project.root / "metrics"),
            "--params", str(project.root / "params.yaml")]
    thresholds.write_text(f"{DS}:\n  accuracy: {value}\n")
    assert cli.main(args) == 0
    thresholds.write_text(f"{DS}:\n  accuracy: {value + 0.001}\n")  # raised above the metric
    assert cli.main(args) == 1


@pytest.mark.slow
def test_a_queued_seed_sweep_and_its_aggregate(project):
    """The README's seed sweep, queued (two seeds), and `oncopipe results --seeds`."""
    # the module's other experiments (an lr sweep) are not part of this sweep
    project.run("dvc", "exp", "remove", "--all-commits")
    # queued experiments run in a temporary copy: the stand-in prepared data is copied in
    project.run("dvc", "exp", "run", "--queue", "-S", "seed=1,2", "-C", f"data/prepared/{DS}",
                *CHAIN)
    project.run("dvc", "exp", "run", "--run-all")
    out = project.run("python", "-m", "oncopipe.cli", "results", "--seeds")
    rows = {tuple(c.strip() for c in line.strip("|").split("|")) for line in out.splitlines()
            if line.startswith(f"| {DS} ")}
    figures = {r[1]: r for r in rows}
    assert set(figures) == {"balanced_accuracy", "accuracy", "auc", "sensitivity",
                            "specificity"}
    ba = figures["balanced_accuracy"]
    assert ba[4] == "2"  # two seeds
    per_seed = dict(p.split(": ") for p in ba[5].split(", "))
    assert set(per_seed) == {"1", "2"}
    values = [float(v) for v in per_seed.values()]
    assert float(ba[2]) == pytest.approx(sum(values) / 2, abs=1e-3)
    assert float(ba[3]) == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5, abs=1e-3)
    # a sweep that changed more than the seed is refused, in one line
    project.run("dvc", "exp", "run", "-S", f"{DS}.train.demo.lr=2.0e-3", *CHAIN)
    done = subprocess.run(["python", "-m", "oncopipe.cli", "results", "--seeds"],
                          cwd=project.root, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "not only in seed" in done.stderr
