"""Evaluate stage: every metrics key, per-sample predictions, plot data, reproducibility."""

from __future__ import annotations

import csv
import json

import pytest
from synthetic_data import config_for, make_shards

from oncopipe import evaluation, training
from oncopipe.config import ShardParams

KEYS = {"accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "precision", "f1",
        "ece", "sensitivity_at_95_specificity", "n_test", "per_class", "confusion_matrix", "ci"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    shards = make_shards(root, ShardParams(shard_size=16), patients_per_class=(12, 8, 8),
                         samples_per_patient=2)
    training.train(config_for(), shards, root / "model", root / "live")
    return shards, root / "model"


def test_writes_every_metric_predictions_and_plots(trained, tmp_path):
    shards, model = trained
    result = evaluation.evaluate(config_for(), shards, model, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == result and set(saved) >= KEYS
    assert set(saved["ci"]) == {"level", "accuracy", "auc", "sensitivity", "specificity"}
    assert saved["balanced_accuracy"] >= 0.8  # three separable classes
    with open(tmp_path / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == saved["n_test"]
    assert set(rows[0]) == {"sample_id", "patient_id", "actual", "predicted", "p_class0",
                            "p_class1", "p_class2"}
    assert sum(float(rows[0][f"p_class{c}"]) for c in range(3)) == pytest.approx(1, abs=1e-4)
    roc = (tmp_path / "plots" / "roc.csv").read_text().splitlines()
    assert roc[0] == "fpr,tpr" and len(roc) > 2
    assert (tmp_path / "plots" / "calibration.csv").read_text().startswith("confidence,")
    assert (tmp_path / "plots.png").read_bytes()[:4] == b"\x89PNG"


def test_same_model_same_metrics_bytes(trained, tmp_path):
    shards, model = trained
    evaluation.evaluate(config_for(), shards, model, tmp_path / "a", png=False)
    evaluation.evaluate(config_for(), shards, model, tmp_path / "b", png=False)
    for name in ("metrics.json", "predictions.csv", "plots/roc.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_model_from_other_shards_is_refused(trained, tmp_path):
    _, model = trained
    other = make_shards(tmp_path, ShardParams(shard_size=16), patients_per_class=(4, 4))
    with pytest.raises(ValueError, match="other shards"):
        evaluation.evaluate(config_for(), other, model, tmp_path / "out")
