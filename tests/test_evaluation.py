"""Evaluate stage: every metrics key, per-sample predictions, plot data, reproducibility."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from synthetic_data import config_for, make_shards

from oncopipe.core.config import ShardParams
from oncopipe.evaluate import evaluation
from oncopipe.learn import metrics
from oncopipe.learn.inference import Runtime, load_model, make_loader, predict
from oncopipe.learn.loader import ShardDataset
from oncopipe.train import training

KEYS = {"accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "precision", "f1",
        "ece", "sensitivity_at_95_specificity", "operating_point", "n_test", "per_class",
        "confusion_matrix", "ci"}


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
    summary = json.loads((tmp_path / "summary.json").read_text())  # what DVC shows
    assert summary == {k: saved[k] for k in evaluation.SUMMARY}
    assert len(summary) <= 10
    assert set(saved["ci"]) == {"level", "method", *metrics.CI_METRICS}
    assert saved["ci"]["balanced_accuracy"]["low"] <= saved["balanced_accuracy"]
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
    evaluation.evaluate(config_for(), shards, model, tmp_path / "a")
    evaluation.evaluate(config_for(), shards, model, tmp_path / "b")
    for name in ("metrics.json", "predictions.csv", "plots/roc.csv", "plots/calibration.csv",
                 "plots.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_model_from_other_shards_is_refused(trained, tmp_path):
    _, model = trained
    other = make_shards(tmp_path, ShardParams(shard_size=16), patients_per_class=(4, 4))
    with pytest.raises(ValueError, match="other shards"):
        evaluation.evaluate(config_for(), other, model, tmp_path / "out")


def _split_probabilities(shards, model_dir, split):
    rt = Runtime(torch.device("cpu"))
    model, _ = load_model(model_dir, rt.device)
    ds = ShardDataset(shards, split)
    loader, _ = make_loader(ds, 8, False, 0, rt, 0)
    prob, y = predict(model, loader, rt, False)
    ds.close()
    return prob, y


def test_operating_point_is_chosen_on_val_and_reported_on_test(trained, tmp_path):
    shards, model = trained
    result = evaluation.evaluate(config_for(), shards, model, tmp_path, png=False)
    op = result["operating_point"]
    val_prob, val_y = _split_probabilities(shards, model, "val")
    prob, y = _split_probabilities(shards, model, "test")
    assert op["chosen_on"] == "val" and op["n_val"] == len(val_y)
    for c, name in enumerate(["class0", "class1", "class2"]):
        row = op["per_class"][name]
        t = metrics.threshold_at_specificity(val_prob[:, c], val_y == c, 0.95)
        assert row["threshold"] == round(t, 6)  # from val, not test
        assert row["val_specificity"] >= 0.95
        assert row["val_negatives"] == (val_y != c).sum()
        sens = ((prob[:, c] >= t) & (y == c)).sum() / (y == c).sum()
        lo, hi = row["test_sensitivity_range"]
        assert lo - 1e-6 <= sens <= hi + 1e-6  # the threshold lies in the gap
        assert row["resolved"] == (row["val_negatives"] >= 20)
    assert result["sensitivity_at_95_specificity"] == op["test_sensitivity"]
