"""The CI metrics gate: thresholds, per-profile floors, missing metrics, baseline via dvc."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from oncopipe import cli, gate

ROOT = Path(__file__).resolve().parents[1]
# demo-level figures for every dataset: above the demo floors, below the published ones
DEMO_LEVEL = {
    "lidc": {"accuracy": 0.87, "balanced_accuracy": 0.94, "auc": 0.96, "ece": 0.04},
    "mosmed": {"accuracy": 0.71, "balanced_accuracy": 0.75, "auc": 0.90},
    "pcam": {"accuracy": 0.96, "balanced_accuracy": 0.96, "auc": 0.99, "ece": 0.05},
    "isic": {"accuracy": 0.84, "balanced_accuracy": 0.92, "auc": 0.97,
             "per_class": {"benign": {"sensitivity": 0.84}, "malignant": {"sensitivity": 1.0}}},
    "breakhis": {"accuracy": 0.95, "balanced_accuracy": 0.95, "auc": 0.99},
}


def _setup(root, metrics=None, thresholds="lidc:\n  balanced_accuracy: 0.8\n  ece: {max: 0.2}\n"):
    (root / "metrics" / "lidc").mkdir(parents=True, exist_ok=True)
    metrics = metrics or {"balanced_accuracy": 0.85, "ece": 0.1, "auc": 0.9,
                          "per_class": {"solid": {"sensitivity": 0.7}}}
    (root / "metrics" / "lidc" / "metrics.json").write_text(json.dumps(metrics))
    (root / "metrics" / "thresholds.yaml").write_text(thresholds)
    _params(root, {})
    return root / "metrics" / "thresholds.yaml", root / "metrics"


def _params(root, profiles: dict[str, str]) -> Path:
    """A params.yaml giving each dataset its profile (unnamed datasets: no section)."""
    path = root / "params.yaml"
    path.write_text("seed: 1\n" + "".join(f"{ds}:\n  profile: {p}\n"
                                           for ds, p in profiles.items()))
    return path


def _demo_level_metrics(root) -> Path:
    for ds, m in DEMO_LEVEL.items():
        (root / "metrics" / ds).mkdir(parents=True, exist_ok=True)
        (root / "metrics" / ds / "metrics.json").write_text(json.dumps(m))
    shutil.copy(ROOT / "metrics" / "thresholds.yaml", root / "metrics" / "thresholds.yaml")
    return root / "metrics"


def test_passes_when_every_metric_meets_its_threshold(tmp_path, capsys):
    t, m = _setup(tmp_path)
    assert gate.run(t, m, params_file=tmp_path / "params.yaml") == 0
    out = capsys.readouterr().out
    assert "balanced_accuracy" in out and "FAIL" not in out


def test_fails_when_a_threshold_is_raised_above_the_metric(tmp_path, capsys):
    t, m = _setup(tmp_path, thresholds="lidc:\n  balanced_accuracy: 0.9\n")
    assert gate.run(t, m, params_file=tmp_path / "params.yaml") == 1
    assert "FAIL" in capsys.readouterr().out


def test_max_bounds_nested_keys_and_missing_metrics(tmp_path):
    t, m = _setup(tmp_path, thresholds="lidc:\n  ece: {max: 0.05}\n")
    assert gate.run(t, m, params_file=tmp_path / "params.yaml") == 1
    t, m = _setup(tmp_path, thresholds="lidc:\n  per_class.solid.sensitivity: 0.6\n")
    assert gate.run(t, m, params_file=tmp_path / "params.yaml") == 0
    t, m = _setup(tmp_path, thresholds="lidc:\n  auc: 0.5\nmosmed:\n  auc: 0.5\n")
    assert gate.run(t, m, params_file=tmp_path / "params.yaml") == 1  # mosmed has no metrics.json
    t, m = _setup(tmp_path, thresholds="lidc:\n  no_such_metric: 0.5\n")
    assert gate.run(t, m, params_file=tmp_path / "params.yaml") == 1


def test_bad_thresholds_file_is_a_clear_error(tmp_path, capsys):
    t, m = _setup(tmp_path, thresholds="lidc:\n  auc: high\n")
    with pytest.raises(gate.GateError, match=r"lidc\.auc"):
        gate.run(t, m, params_file=tmp_path / "params.yaml")
    assert cli.main(["gate", "--thresholds", str(t), "--metrics-dir", str(m), "--params",
                     str(tmp_path / "params.yaml")]) == 2
    assert "lidc.auc" in capsys.readouterr().err


def test_baseline_regression_via_dvc_metrics_diff(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, check=True)
    # evaluate's DVC metrics: summary.json, the headline figures of metrics.json
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - metrics/lidc/summary.json\n")
    summary = tmp_path / "metrics" / "lidc" / "summary.json"
    t, m = _setup(tmp_path, thresholds="lidc:\n  auc: 0.5\n")
    summary.write_text((m / "lidc" / "metrics.json").read_text())
    subprocess.run(["git", "add", "-A"], check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"],
                   check=True)
    _setup(tmp_path, {"auc": 0.80}, thresholds="lidc:\n  auc: 0.5\n")  # was 0.9
    summary.write_text((m / "lidc" / "metrics.json").read_text())
    assert gate.run(t.relative_to(tmp_path), m.relative_to(tmp_path), baseline="HEAD") == 1
    assert gate.run(t.relative_to(tmp_path), m.relative_to(tmp_path), baseline="HEAD",
                    tolerance=0.2) == 0


def test_each_dataset_is_gated_with_the_floors_of_its_own_profile(tmp_path, capsys):
    m = _demo_level_metrics(tmp_path)
    t = m / "thresholds.yaml"
    params = _params(tmp_path, {ds: "demo" for ds in DEMO_LEVEL})
    assert gate.run(t, m, params_file=params) == 0  # the committed demo floors pass
    out = capsys.readouterr().out
    assert "reference" not in out and "balanced_accuracy" in out
    # pcam switched to its reference recipe: its published 97.5% accuracy now applies, to it
    # alone; the others keep their demo floors
    params = _params(tmp_path, {**{ds: "demo" for ds in DEMO_LEVEL}, "pcam": "reference"})
    assert gate.run(t, m, params_file=params) == 1
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    failed = [r for r in rows if r[-1] == "FAIL"]
    assert failed == [["pcam", "reference", "accuracy", "0.9600", ">=", "0.975", "FAIL"]]
    assert {r[1] for r in rows if r[0] == "lidc"} == {"demo"}
    # a dataset without a profile key trains (and is gated as) demo
    assert gate.run(t, m, params_file=_params(tmp_path, {})) == 0


def test_reference_profile_on_demo_level_metrics_fails(tmp_path, capsys):
    m = _demo_level_metrics(tmp_path)
    params = _params(tmp_path, {ds: "reference" for ds in DEMO_LEVEL})
    assert gate.run(m / "thresholds.yaml", m, params_file=params) == 1
    failed = {(r.split()[0], r.split()[2]) for r in capsys.readouterr().out.splitlines()
              if r.endswith("FAIL")}
    assert failed == {(ds, "accuracy") for ds in DEMO_LEVEL} | {
        ("isic", "per_class.benign.sensitivity")}
    # the --profile override, through the command line, without reading params.yaml
    args = ["gate", "--thresholds", str(m / "thresholds.yaml"), "--metrics-dir", str(m),
            "--params", str(tmp_path / "absent.yaml")]
    assert cli.main([*args, "--profile", "reference"]) == 1
    assert cli.main([*args, "--profile", "demo"]) == 0


def test_committed_thresholds_have_both_profiles_for_every_dataset():
    floors = gate.read_thresholds(ROOT / "metrics" / "thresholds.yaml")
    assert set(floors) == {"demo", "reference"}
    for profile in floors:
        assert set(floors[profile]) == set(DEMO_LEVEL)
    # the published accuracies (docs/*.md) are the reference floors
    assert {ds: f["accuracy"]["min"] for ds, f in floors["reference"].items()} == {
        "lidc": 0.93, "mosmed": 0.78, "pcam": 0.975, "isic": 0.857, "breakhis": 0.97}


def test_a_file_without_sections_applies_to_every_profile_and_bad_profiles_are_named(tmp_path):
    t, m = _setup(tmp_path, thresholds="lidc:\n  auc: 0.95\n")  # metrics auc 0.9
    for profile in ("demo", "reference"):
        assert gate.run(t, m, params_file=_params(tmp_path, {"lidc": profile})) == 1
    t.write_text("demo:\n  lidc:\n    auc: 0.5\nlidc:\n  auc: 0.5\n")
    with pytest.raises(gate.GateError, match="lidc: unknown profile section"):
        gate.run(t, m, params_file=tmp_path / "params.yaml")
    t.write_text("demo:\n  lidc:\n    auc: 0.5\n")  # no reference section: no floors there
    assert gate.run(t, m, params_file=_params(tmp_path, {"lidc": "reference"})) == 0
    with pytest.raises(gate.GateError, match=r"lidc\.profile.*'paper'"):
        gate.run(t, m, params_file=_params(tmp_path, {"lidc": "paper"}))
    with pytest.raises(gate.GateError, match="absent.yaml.*not found.*--profile"):
        gate.run(t, m, params_file=tmp_path / "absent.yaml")


def test_demo_data_is_never_held_to_the_reference_floors(tmp_path, capsys):
    m = _demo_level_metrics(tmp_path)
    for ds in ("pcam", "breakhis"):  # metrics of the synthetic demo data, as evaluate records
        path = m / ds / "metrics.json"
        path.write_text(json.dumps({**json.loads(path.read_text()),
                                    "provenance": {"raw": {"source": "demo"}}}))
    args = ["gate", "--thresholds", str(m / "thresholds.yaml"), "--metrics-dir", str(m),
            "--params", str(tmp_path / "absent.yaml")]
    assert cli.main([*args, "--profile", "reference"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pcam, breakhis" not in err[0]
    assert "breakhis, pcam" in err[0] and "demo data" in err[0] and "reference" in err[0]
    assert cli.main([*args, "--profile", "demo"]) == 0


def test_a_floor_on_the_interval_lower_bound(tmp_path, capsys):
    metrics = {"balanced_accuracy": 1.0, "ci": {"balanced_accuracy": {"low": 0.54, "high": 1.0}}}
    t, m = _setup(tmp_path, metrics, thresholds="lidc:\n  balanced_accuracy: {ci_lower: 0.6}\n")
    assert gate.run(t, m, params_file=tmp_path / "params.yaml") == 1  # 1.0, but only 6 cases
    row = next(r for r in capsys.readouterr().out.splitlines() if "ci low" in r)
    assert row.split()[-3:] == [">=", "0.6", "FAIL"] and "0.5400" in row
    t.write_text("lidc:\n  balanced_accuracy: {min: 0.9, ci_lower: 0.5}\n")
    assert gate.run(t, m, params_file=tmp_path / "params.yaml") == 0
    t.write_text("lidc:\n  balanced_accuracy: {ci_low: 0.5}\n")
    with pytest.raises(gate.GateError, match="ci_lower"):
        gate.run(t, m, params_file=tmp_path / "params.yaml")


def test_raw_provenance_tells_the_demo_from_a_real_folder(tmp_path):
    from oncopipe.core import provenance

    manifest = tmp_path / "manifest.parquet"
    manifest.write_bytes(b"rows")
    for raw in ("data/demo/pcam", tmp_path / "data" / "demo" / "pcam"):
        assert provenance.raw_source("pcam", Path(raw), manifest)["source"] == "demo"
    real = provenance.raw_source("pcam", Path("/data/histopathologic-cancer-detection"), manifest)
    assert real["source"] == "real" and real["path"] == "/data/histopathologic-cancer-detection"
    assert real["manifest_sha256"] == provenance.file_sha256(manifest) and \
        len(real["manifest_sha256"]) == 64
    assert provenance.raw_source("lidc", Path("data/demo/pcam"), manifest)["source"] == "real"
