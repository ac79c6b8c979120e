"""The CI metrics gate: thresholds, missing metrics, baseline via dvc metrics diff."""

from __future__ import annotations

import json
import subprocess

import pytest

from oncopipe import cli, gate


def _setup(root, metrics=None, thresholds="lidc:\n  balanced_accuracy: 0.8\n  ece: {max: 0.2}\n"):
    (root / "metrics" / "lidc").mkdir(parents=True, exist_ok=True)
    metrics = metrics or {"balanced_accuracy": 0.85, "ece": 0.1, "auc": 0.9,
                          "per_class": {"solid": {"sensitivity": 0.7}}}
    (root / "metrics" / "lidc" / "metrics.json").write_text(json.dumps(metrics))
    (root / "metrics" / "thresholds.yaml").write_text(thresholds)
    return root / "metrics" / "thresholds.yaml", root / "metrics"


def test_passes_when_every_metric_meets_its_threshold(tmp_path, capsys):
    t, m = _setup(tmp_path)
    assert gate.run(t, m) == 0
    out = capsys.readouterr().out
    assert "balanced_accuracy" in out and "FAIL" not in out


def test_fails_when_a_threshold_is_raised_above_the_metric(tmp_path, capsys):
    t, m = _setup(tmp_path, thresholds="lidc:\n  balanced_accuracy: 0.9\n")
    assert gate.run(t, m) == 1
    assert "FAIL" in capsys.readouterr().out


def test_max_bounds_nested_keys_and_missing_metrics(tmp_path):
    t, m = _setup(tmp_path, thresholds="lidc:\n  ece: {max: 0.05}\n")
    assert gate.run(t, m) == 1
    t, m = _setup(tmp_path, thresholds="lidc:\n  per_class.solid.sensitivity: 0.6\n")
    assert gate.run(t, m) == 0
    t, m = _setup(tmp_path, thresholds="lidc:\n  auc: 0.5\nmosmed:\n  auc: 0.5\n")
    assert gate.run(t, m) == 1  # mosmed has no metrics.json
    t, m = _setup(tmp_path, thresholds="lidc:\n  no_such_metric: 0.5\n")
    assert gate.run(t, m) == 1


def test_bad_thresholds_file_is_a_clear_error(tmp_path, capsys):
    t, m = _setup(tmp_path, thresholds="lidc:\n  auc: high\n")
    with pytest.raises(gate.GateError, match=r"lidc\.auc"):
        gate.run(t, m)
    assert cli.main(["gate", "--thresholds", str(t), "--metrics-dir", str(m)]) == 2
    assert "lidc.auc" in capsys.readouterr().err


def test_baseline_regression_via_dvc_metrics_diff(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, check=True)
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - metrics/lidc/metrics.json\n")
    t, m = _setup(tmp_path, thresholds="lidc:\n  auc: 0.5\n")
    subprocess.run(["git", "add", "-A"], check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"],
                   check=True)
    _setup(tmp_path, {"auc": 0.80}, thresholds="lidc:\n  auc: 0.5\n")  # was 0.9
    assert gate.run(t.relative_to(tmp_path), m.relative_to(tmp_path), baseline="HEAD") == 1
    assert gate.run(t.relative_to(tmp_path), m.relative_to(tmp_path), baseline="HEAD",
                    tolerance=0.2) == 0
