"""Metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from oncopipe.learn import metrics

NAMES2 = ["benign", "malignant"]


def _binary(scores, y):
    p = np.asarray(scores, dtype=float)
    return np.stack([1 - p, p], 1), np.asarray(y)


def test_binary_metrics_by_hand():
    prob, y = _binary([0.1, 0.4, 0.35, 0.8, 0.7, 0.2], [0, 0, 1, 1, 0, 1])
    m = metrics.compute(y, prob, np.arange(6).astype(str), NAMES2, bootstrap=0)
    # predictions (>0.5): 0 0 0 1 1 0 -> TP 1, FN 2, FP 1, TN 2
    assert m["confusion_matrix"] == [[2, 1], [2, 1]]
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["sensitivity"] == pytest.approx(1 / 3, abs=1e-6)
    assert m["specificity"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["precision"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.4)
    # pairs (pos, neg): 0.35>0.1, 0.35<0.4, 0.35<0.7, 0.8>all, 0.2>0.1 -> (1+3+1)/9
    assert m["auc"] == pytest.approx(5 / 9, abs=1e-6)
    assert m["n_test"] == 6 and m["per_class"]["malignant"]["support"] == 3


def test_auc_counts_ties_as_half_and_perfect_separation():
    prob, y = _binary([0.5, 0.5, 0.9, 0.1], [0, 1, 1, 0])
    m = metrics.compute(y, prob, np.array(list("abcd")), NAMES2, bootstrap=0)
    assert m["auc"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    prob, y = _binary([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    m = metrics.compute(y, prob, np.array(list("abcd")), NAMES2, bootstrap=0)
    assert m["auc"] == 1.0 and m["balanced_accuracy"] == 1.0
    # no validation split given: no operating point (never chosen on the test split)
    assert m["sensitivity_at_95_specificity"] is None and m["operating_point"] is None


def test_operating_point_is_chosen_on_validation_and_applied_to_test():
    # val: 20 negatives (one false positive allowed at 95%): scores 0.01..0.19 and 0.6; the
    # positives 0.5, 0.7, 0.9 -> the lowest admissible score is 0.5, the next lower 0.19:
    # threshold at the midpoint 0.345
    neg = [0.01 * i for i in range(1, 20)] + [0.6]
    val_prob, val_y = _binary([*neg, 0.5, 0.7, 0.9], [0] * 20 + [1, 1, 1])
    prob, y = _binary([0.62, 0.8, 0.1, 0.2, 0.75, 0.3, 0.2], [0, 0, 0, 0, 1, 1, 1])
    m = metrics.compute(y, prob, np.arange(7).astype(str), NAMES2, bootstrap=0,
                        val=(val_y, val_prob, np.arange(23).astype(str)))
    op = m["operating_point"]
    assert op["chosen_on"] == "val" and op["threshold"] == pytest.approx(0.345)
    assert op["resolved"] and op["val_negatives"] == 20 and op["val_positives"] == 3
    assert op["val_specificity"] == 0.95 and op["val_sensitivity"] == 1.0
    # on test at 0.345: positive 0.75 called (1 of 3); negatives 0.62, 0.8 called (2 of 4 right).
    assert op["test_sensitivity"] == pytest.approx(1 / 3, abs=1e-6)
    assert op["test_specificity"] == pytest.approx(0.5)
    assert m["sensitivity_at_95_specificity"] == op["test_sensitivity"]
    assert op["n_val"] == 23 and m["accuracy"] == pytest.approx(3 / 7, abs=1e-6)  # still argmax
    ci = m["ci"][metrics.OPERATING_POINT_METRIC]
    assert ci["low"] < 1 / 3 < ci["high"] and ci["n"] == 3 and ci["small_n"]


def test_unresolved_specificity_reports_the_test_sensitivity_range_over_the_gap():
    # val: 4 negatives, so 95% specificity cannot be told from 100%; descending scores
    # 0.9 p, 0.7 p, 0.6 n -> every threshold in (0.6, 0.7] has no false positive
    val_prob, val_y = _binary([0.1, 0.2, 0.3, 0.6, 0.5, 0.7, 0.9], [0, 0, 0, 0, 1, 1, 1])
    prob, y = _binary([0.62, 0.8, 0.1, 0.2, 0.75, 0.68, 0.3], [0, 0, 0, 0, 1, 1, 1])
    m = metrics.compute(y, prob, np.arange(7).astype(str), NAMES2, bootstrap=0,
                        val=(val_y, val_prob, np.arange(7).astype(str)))
    op = m["operating_point"]
    assert not op["resolved"] and op["val_negatives"] == 4 and op["min_val_negatives"] == 20
    # test positives 0.75, 0.68, 0.3: at the top of the gap (0.7) 1 of 3, just above 0.6 2 of 3
    assert op["test_sensitivity_range"] == [pytest.approx(1 / 3, abs=1e-6),
                                            pytest.approx(2 / 3, abs=1e-6)]
    assert op["test_sensitivity"] is None and m["sensitivity_at_95_specificity"] is None
    ci = m["ci"][metrics.OPERATING_POINT_METRIC]
    assert ci["low"] < 1 / 3 and ci["high"] > 2 / 3


def test_operating_point_above_every_score_when_the_top_validation_score_is_negative():
    val_prob, val_y = _binary([0.95, 0.5, 0.4], [0, 1, 1])
    prob, y = _binary([0.99, 0.2], [1, 0])
    m = metrics.compute(y, prob, np.array(["a", "b"]), NAMES2, bootstrap=0,
                        val=(val_y, val_prob, np.array(["c", "d", "e"])))
    op = m["operating_point"]
    assert op["val_specificity"] == 1.0 and op["val_sensitivity"] == 0.0
    assert op["threshold"] >= 0.95 and not op["resolved"]  # just above the top negative
    assert op["test_sensitivity_range"] == [0.0, 1.0]  # 0.99 is above 0.95, below the top
    assert metrics.threshold_at_specificity(np.array([0.3, 0.4]), np.array([True, True]),
                                            0.95) is None  # no negatives: undefined


def test_multiclass_operating_point_is_one_vs_rest_per_class_then_macro():
    rng = np.random.default_rng(4)
    val_y, y = rng.integers(0, 3, 120), rng.integers(0, 3, 90)
    val_prob = rng.dirichlet(np.ones(3), 120) + np.eye(3)[val_y]
    val_prob /= val_prob.sum(1, keepdims=True)
    prob = rng.dirichlet(np.ones(3), 90) + np.eye(3)[y]
    prob /= prob.sum(1, keepdims=True)
    names = ["a", "b", "c"]
    m = metrics.compute(y, prob, np.arange(90).astype(str), names, bootstrap=0,
                        val=(val_y, val_prob, np.arange(120).astype(str)))
    op = m["operating_point"]
    sens = []
    for c, name in enumerate(names):
        row, score = op["per_class"][name], val_prob[:, c]
        t = metrics.threshold_at_specificity(score, val_y == c, 0.95)
        assert row["threshold"] == round(t, 6) and row["val_specificity"] >= 0.95
        neg = score[val_y != c]
        next_lower = score[score < t].max()  # the lowest threshold that keeps 95% specificity
        assert (neg >= t).mean() <= 0.05 < (neg >= next_lower).mean()
        sens.append(((prob[:, c] >= t) & (y == c)).sum() / (y == c).sum())
    assert op["test_sensitivity"] == pytest.approx(np.mean(sens), abs=1e-6)
    assert m["sensitivity_at_95_specificity"] == pytest.approx(np.mean(sens), abs=1e-6)


def test_multiclass_macro_and_undefined_precision_is_zero():
    y = np.array([0, 0, 1, 1, 2, 2])
    prob = np.eye(3)[[0, 0, 1, 0, 0, 0]] * 0.8 + 0.2 / 3
    m = metrics.compute(y, prob, np.arange(6).astype(str), ["a", "b", "c"], bootstrap=0)
    assert m["balanced_accuracy"] == pytest.approx((1 + 0.5 + 0) / 3, abs=1e-6)
    assert metrics.balanced_accuracy(y, prob.argmax(1), 3) == pytest.approx(0.5)  # training's
    assert m["per_class"]["c"]["precision"] == 0.0  # never predicted, but present
    assert m["precision"] == pytest.approx((2 / 5 + 1 + 0) / 3, abs=1e-6)  # a: 2 of 5 right
    assert len(m["confusion_matrix"]) == 3


def test_ece_of_a_perfectly_calibrated_and_an_overconfident_model():
    y = np.array([1, 1, 1, 0])  # confidence 0.75 for class 1, right 3 of 4 times
    prob = np.tile([0.25, 0.75], (4, 1))
    ece, table = metrics.expected_calibration_error(y, prob, 10)
    assert ece == pytest.approx(0.0) and table[0]["count"] == 4
    ece, _ = metrics.expected_calibration_error(np.array([0, 0, 0, 1]), prob, 10)
    assert ece == pytest.approx(0.5)


def test_weighted_auc_equals_auc_of_replicated_samples():
    rng = np.random.default_rng(0)
    s, pos = rng.random(30), rng.random(30) < 0.4
    w = rng.integers(0, 3, 30)
    rep_s, rep_pos = np.repeat(s, w), np.repeat(pos, w)
    fpr, tpr, _ = metrics.roc_curve(rep_s, rep_pos)
    assert metrics._weighted_auc(s, pos, w[None].astype(float))[0] == pytest.approx(
        np.trapezoid(tpr, fpr))


def test_intervals_over_patients_are_seeded_bracket_the_estimate_and_carry_their_n():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    prob, _ = _binary(np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1), y)
    patients = np.repeat(np.arange(50), 4).astype(str)
    val = (y[::-1], prob[::-1], patients)
    a = metrics.compute(y, prob, patients, NAMES2, bootstrap=300, seed=3, val=val)
    b = metrics.compute(y, prob, patients, NAMES2, bootstrap=300, seed=3, val=val)
    assert a == b
    assert set(a["ci"]) == {"level", "method", *metrics.CI_METRICS}
    assert "balanced_accuracy" in metrics.CI_METRICS  # the headline metric
    for name in metrics.CI_METRICS:
        e = a["ci"][name]
        assert e["low"] <= a[name] <= e["high"] and e["low"] < e["high"]
        assert e["n_patients"] <= 50 and e["n_eff"] <= e["n"] <= 200
    assert a["ci"]["accuracy"]["n"] == 200 and a["ci"]["accuracy"]["n_patients"] == 50
    without_val = metrics.compute(y, prob, patients, NAMES2, bootstrap=300, seed=3)
    assert metrics.OPERATING_POINT_METRIC not in without_val["ci"]
    assert without_val["ci"]["balanced_accuracy"] == a["ci"]["balanced_accuracy"]


def test_a_perfect_score_on_few_patients_is_not_a_point_interval():
    y = np.array([0, 0, 0, 1, 1, 1])
    prob, _ = _binary([0.1, 0.2, 0.1, 0.9, 0.8, 0.9], y)
    m = metrics.compute(y, prob, np.arange(6).astype(str), NAMES2, bootstrap=200)
    for name in ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity"):
        assert m[name] == 1.0 and m["ci"][name]["high"] == 1.0
        assert m["ci"][name]["low"] < 0.7 and m["ci"][name]["small_n"]
    # 6 of 6 independent: the exact lower bound (0.025 ** (1/6))
    assert m["ci"]["accuracy"]["low"] == pytest.approx(0.025 ** (1 / 6), abs=1e-6)
    # the same 6 samples from 2 patients are worth 2 independent cases
    grouped = metrics.compute(y, prob, np.array(list("aaabbb")), NAMES2, bootstrap=200)
    assert grouped["ci"]["accuracy"]["n_eff"] == 2
    assert grouped["ci"]["accuracy"]["low"] < m["ci"]["accuracy"]["low"]


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        metrics.compute(np.array([0, 1]), np.ones((2, 3)) / 3, np.array(["a", "b"]), NAMES2)
