"""Classification metrics in numpy, including bootstrap intervals over patients.

Conventions: ``y`` are integer labels (N,), ``prob`` class probabilities (N, K). For two
classes the positive class is index 1 (sensitivity, specificity, precision, F1, AUC are of that
class); for more, they are macro averages over one-vs-rest, and AUC is the one-vs-rest macro
AUC. Undefined values (no positives, say) are ``None`` in JSON, never a silent 0.

Operating points are never chosen on the test split: :func:`operating_point` picks, on the
validation split, the lowest score threshold whose specificity is at least
:data:`TARGET_SPECIFICITY` (binary: for the positive class; more classes: one threshold per
class, one-vs-rest) and reports sensitivity and specificity of the test split at that fixed
threshold. The headline decision rule stays argmax.

Intervals (:mod:`oncopipe.learn.intervals`): proportions (accuracy, sensitivity, specificity,
balanced accuracy, the operating point's sensitivity) and AUC get exact intervals at their
effective sample size, clustered by patient, which keep their coverage at any n and at 0% or
100% (simulated in docs/intervals.md); each carries its n (samples, patients, effective) and a
``small_n`` flag. ECE, not a proportion, gets a percentile bootstrap over *patients* (samples
of one patient are correlated, so resampling samples would understate the spread), evaluated
at once with integer weights per sample. Thresholds chosen on validation stay fixed: the
intervals are the test split's sampling spread.

An operating point records the validation counts behind it. With fewer validation negatives
than ``1 / (1 - target)`` the target specificity cannot be resolved (one false positive
already misses it): any threshold in the gap above the highest admissible negative gives the
same validation figures, so the test sensitivity is reported as its range over that gap
(``resolved: false``), not at one point of it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, SupportsFloat

import numpy as np

from oncopipe.learn import intervals

TARGET_SPECIFICITY = 0.95
OPERATING_POINT_METRIC = "sensitivity_at_95_specificity"
CI_METRICS = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity",
              OPERATING_POINT_METRIC, "ece")
CI_METHOD = ("exact (Clopper-Pearson) at the effective n, clustered by patient (Korn-Graubard); "
             "AUC over the smaller class; ECE: percentile bootstrap over patients")
_BOOTSTRAP_CELLS = 4_000_000


def _div(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(a, dtype=np.float64) / np.asarray(b, dtype=np.float64)


def confusion_matrix(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows: actual class, columns: predicted class."""
    return np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes)


def recall_per_class(cm: np.ndarray) -> np.ndarray:
    """Sensitivity of each class from a confusion matrix; NaN for a class with no samples."""
    return _div(np.diag(cm), cm.sum(axis=1))


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Mean recall over the classes present in ``y``."""
    return float(_nanmean(recall_per_class(confusion_matrix(y, pred, n_classes))))


def _weighted_auc(score: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of ``score`` for ``positive`` under each row of ``weights`` (B, N); ties count 1/2."""
    order = np.argsort(score, kind="stable")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    w = weights[:, order]
    pos = np.add.reduceat(w * positive[order], starts, axis=1)
    neg = np.add.reduceat(w * ~positive[order], starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    num = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    return _div(num, pos.sum(axis=1) * neg.sum(axis=1))


def _rates(y: np.ndarray, pred: np.ndarray, prob: np.ndarray, weights: np.ndarray
           ) -> dict[str, Any]:
    """Weighted metrics under each weight row (B, N); arrays of shape (B,)."""
    k = prob.shape[1]
    correct = (pred == y).astype(np.float64)
    total = weights.sum(axis=1)
    out = {"accuracy": _div(weights @ correct, total)}
    sens, spec, auc = [], [], []
    for c in range(k):
        is_c, pred_c = y == c, pred == c
        sens.append(_div(weights @ (is_c & pred_c), weights @ is_c))
        spec.append(_div(weights @ (~is_c & ~pred_c), weights @ ~is_c))
        if k > 2 or c == 1:
            auc.append(_weighted_auc(prob[:, c], is_c, weights))
    out["balanced_accuracy"] = _nanmean(np.stack(sens))  # mean recall of the classes present
    if k == 2:
        out["sensitivity"], out["specificity"], out["auc"] = sens[1], spec[1], auc[0]
    else:
        out["sensitivity"] = _nanmean(np.stack(sens))
        out["specificity"] = _nanmean(np.stack(spec))
        out["auc"] = _nanmean(np.stack(auc))
    return out


def _nanmean(a: np.ndarray | list) -> np.ndarray:
    """Mean over axis 0 ignoring NaN (an undefined class); NaN when all are undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.asarray(a, dtype=np.float64), axis=0)


def roc_curve(score: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
    """(fpr, tpr, thresholds), starting at (0, 0); one point per distinct score."""
    order = np.argsort(-score, kind="stable")
    s, p = score[order], positive[order]
    last = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(p)[last]
    fp = np.cumsum(~p)[last]
    n_pos, n_neg = p.sum(), (~p).sum()
    tpr = np.r_[0.0, _div(tp, n_pos)] if n_pos else np.full(len(tp) + 1, np.nan)
    fpr = np.r_[0.0, _div(fp, n_neg)] if n_neg else np.full(len(fp) + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, s[last]]


def macro_roc(y: np.ndarray, prob: np.ndarray, points: int = 101) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    """Binary: the positive class's ROC. More classes: mean one-vs-rest TPR on an FPR grid."""
    k = prob.shape[1]
    if k == 2:
        fpr, tpr, _ = roc_curve(prob[:, 1], y == 1)
        return fpr, tpr
    grid = np.linspace(0.0, 1.0, points)
    curves = []
    for c in range(k):
        positive = y == c
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(prob[:, c], positive)
        curves.append(np.interp(grid, fpr, tpr))
    return grid, np.mean(curves, axis=0) if curves else np.full(points, np.nan)


def threshold_gap(score: np.ndarray, positive: np.ndarray, specificity: float
                  ) -> tuple[float, float] | None:
    """``(low, high)``: every threshold ``t`` with ``low < t <= high`` (positive when
    ``score >= t``) is the most sensitive whose specificity on these samples is at least
    ``specificity``; they all give the same figures here. ``None`` without negatives.

    ``high`` is the lowest admissible score (``inf`` when even the highest score is a
    negative beyond the allowance: nothing is called positive), ``low`` the next lower
    distinct score (``-inf`` when there is none).
    """
    if not (~positive).any():
        return None
    fpr, _, thresholds = roc_curve(score, positive)
    last_ok = np.flatnonzero(fpr <= 1.0 - specificity + 1e-12)[-1]  # fpr never decreases
    high = float(thresholds[last_ok])
    low = float(thresholds[last_ok + 1]) if last_ok + 1 < len(thresholds) else -math.inf
    return low, high


def threshold_at_specificity(score: np.ndarray, positive: np.ndarray,
                             specificity: float) -> float | None:
    """The threshold applied to new samples: the midpoint of :func:`threshold_gap`, so that
    a new sample is not judged by the edge of one sample (just above the highest score when
    the gap is open upwards, the lowest admissible score when open downwards); ``None``
    without negatives."""
    gap = threshold_gap(score, positive, specificity)
    if gap is None:
        return None
    low, high = gap
    if math.isinf(high):
        return float(np.nextafter(score.max(), np.inf))
    return high if math.isinf(low) else (low + high) / 2.0


def resolvable(negatives: int, specificity: float) -> bool:
    """Whether ``negatives`` validation negatives can tell ``specificity`` from 100%: at
    least ``1 / (1 - specificity)`` of them, so that one false positive is allowed."""
    return negatives * (1.0 - specificity) >= 1.0 - 1e-9


def rates_at_threshold(score: np.ndarray, positive: np.ndarray, threshold: float
                       ) -> tuple[float, float]:
    """(sensitivity, specificity) when ``score >= threshold`` is called positive; NaN when
    undefined."""
    called = score >= threshold
    return (float(_div((called & positive).sum(), positive.sum())),
            float(_div((~called & ~positive).sum(), (~positive).sum())))


def _sensitivity_over_gap(score: np.ndarray, positive: np.ndarray, gap: tuple[float, float]
                          ) -> tuple[float, float]:
    """Test sensitivity at the top of the gap (fewest called) and just above its bottom."""
    low, high = gap
    return (float(_div((positive & (score >= high)).sum(), positive.sum())),
            float(_div((positive & (score > low)).sum(), positive.sum())))


def operating_point(val_y: np.ndarray, val_prob: np.ndarray, val_patients: np.ndarray,
                    y: np.ndarray, prob: np.ndarray, class_names: list[str],
                    specificity: float = TARGET_SPECIFICITY) -> tuple[dict, list]:
    """Thresholds chosen on validation for ``specificity``, applied to the test split.

    Returns the ``operating_point`` entry of metrics.json and, per class with a threshold,
    ``(class, called_low, called_high)``: which test samples are called positive at the top
    and at the bottom of the threshold's gap (the same, at the threshold, when resolved),
    for the interval of the test sensitivity. Binary: one
    threshold on the positive class's probability. More classes: one per class
    (one-vs-rest); the top-level figures are macro means over the classes that have a
    threshold. Each class records its validation counts (``val_positives``,
    ``val_negatives`` and their patients), whether the target is ``resolved`` and the test
    sensitivity range over the threshold's gap (``test_sensitivity_range``); an unresolved
    class has no point ``test_sensitivity``.
    """
    k = len(class_names)
    called = []
    per_class = {}
    for c in ([1] if k == 2 else range(k)):
        positive = val_y == c
        gap = threshold_gap(val_prob[:, c], positive, specificity)
        row: dict = dict.fromkeys(("threshold", "val_sensitivity", "val_specificity",
                                   "test_sensitivity", "test_specificity"), math.nan)
        row.update({
            "val_positives": int(positive.sum()), "val_negatives": int((~positive).sum()),
            "val_positive_patients": len(np.unique(val_patients[positive])),
            "val_negative_patients": len(np.unique(val_patients[~positive])),
            "resolved": resolvable(int((~positive).sum()), specificity),
            "test_sensitivity_range": [math.nan, math.nan]})
        if gap is not None:
            t = threshold_at_specificity(val_prob[:, c], positive, specificity)
            assert t is not None  # a gap exists, so does its midpoint
            row["threshold"] = t
            row["val_sensitivity"], row["val_specificity"] = rates_at_threshold(
                val_prob[:, c], positive, t)
            sens, row["test_specificity"] = rates_at_threshold(prob[:, c], y == c, t)
            row["test_sensitivity_range"] = list(_sensitivity_over_gap(prob[:, c], y == c, gap))
            if row["resolved"]:
                row["test_sensitivity"] = sens
                called.append((c, prob[:, c] >= t, prob[:, c] >= t))
            else:
                called.append((c, prob[:, c] >= gap[1], prob[:, c] > gap[0]))
        per_class[class_names[c]] = row
    figures = ("val_sensitivity", "val_specificity", "test_sensitivity", "test_specificity")
    out: dict[str, Any] = {"chosen_on": "val", "target_specificity": specificity,
                            "min_val_negatives": math.ceil(1.0 / (1.0 - specificity) - 1e-9)}
    if k == 2:
        name = class_names[1]
        out["rule"] = f"{name} when p({name}) >= threshold"
        out.update({key: _clean_any(v) for key, v in per_class[name].items()})
    else:
        out["rule"] = ("one-vs-rest: class c when p(c) >= its threshold; figures are macro "
                       "means over the classes")
        rows = list(per_class.values())
        out.update({key: _clean(_nanmean([r[key] for r in rows])) for key in figures})
        out["resolved"] = all(r["resolved"] for r in rows)
        if not out["resolved"]:
            out["test_sensitivity"] = None
        out["test_sensitivity_range"] = [
            _clean(_nanmean([r["test_sensitivity_range"][i] for r in rows])) for i in (0, 1)]
        out["per_class"] = {name: {key: _clean_any(v) for key, v in row.items()}
                            for name, row in per_class.items()}
    out["n_val"] = len(val_y)
    out["n_val_patients"] = len(np.unique(val_patients))
    return out, called


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, bins: int
                               ) -> tuple[float, list[dict[str, Any]]]:
    """ECE of the top-class confidence over ``bins`` equal-width bins, and the bin table."""
    conf = prob.max(axis=1)
    correct = prob.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        m = which == b
        if not m.any():
            continue
        acc, avg = float(correct[m].mean()), float(conf[m].mean())
        ece += m.mean() * abs(acc - avg)
        table.append({"bin": b, "confidence": round(avg, 6), "accuracy": round(acc, 6),
                      "count": int(m.sum())})
    return float(ece), table


def _clean(v: SupportsFloat) -> float | None:
    v = float(v)
    return None if math.isnan(v) else round(v, 6)


def _clean_any(v: object) -> object:
    """Floats rounded (NaN: None), lists of them too; other values as they are."""
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return _clean(v) if isinstance(v, float) else v


def _independent_n(mask: np.ndarray, patients: np.ndarray) -> float:
    """Independent cases among the samples of ``mask``: the samples when each is its own
    patient's only one there, else the patients (conservative)."""
    j = len(np.unique(patients[mask]))
    return float(mask.sum()) if j == mask.sum() else float(j)


def _auc_proportion(auc: float, positive: np.ndarray, patients: np.ndarray
                    ) -> intervals.Proportion:
    n_eff = min(_independent_n(positive, patients), _independent_n(~positive, patients))
    return intervals.Proportion(auc, len(positive), len(np.unique(patients)), n_eff)


def proportion_intervals(y: np.ndarray, pred: np.ndarray, prob: np.ndarray,
                         patients: np.ndarray, level: float, called: list | None) -> dict:
    """The ``ci`` entries of the proportions and AUC (see :mod:`oncopipe.learn.intervals`)."""
    k = prob.shape[1]

    def part(hit: np.ndarray, mask: np.ndarray) -> intervals.Proportion:
        return intervals.clustered(hit[mask], patients[mask], level)

    recall = [part(pred == c, y == c) for c in range(k)]
    spec = [part(pred != c, y != c) for c in range(k)]
    auc = [_auc_proportion(float(_weighted_auc(prob[:, c], y == c, np.ones((1, len(y))))[0]),
                           y == c, patients)
           for c in range(k) if (k > 2 or c == 1) and (y == c).any() and (y != c).any()]
    n, j = len(y), len(np.unique(patients))
    out = {"accuracy": intervals.clustered(pred == y, patients, level),
           "balanced_accuracy": intervals.mean_of(recall, n, j)}
    if k == 2:
        out["sensitivity"], out["specificity"] = recall[1], spec[1]
        out["auc"] = auc[0] if auc else intervals.Proportion(math.nan, n, j, 0.0)
    else:
        out["sensitivity"] = intervals.mean_of(recall, n, j)
        out["specificity"] = intervals.mean_of(spec, n, j)
        out["auc"] = intervals.mean_of(auc, n, j)
    entries = {name: intervals.interval(q, level) for name, q in out.items()}
    if called is not None:
        entries[OPERATING_POINT_METRIC] = _operating_point_interval(y, patients, level, called)
    return entries


def _operating_point_interval(y: np.ndarray, patients: np.ndarray, level: float,
                              called: list) -> dict:
    """The test sensitivity at the operating point; where a class's target is unresolved,
    from the exact low at the top of its gap to the exact high at the bottom."""
    if not called:
        return intervals.interval(intervals.Proportion(math.nan, 0, 0, 0.0), level)
    ends = [[intervals.clustered(hits[y == c], patients[y == c], level) for hits in (lo, hi)]
            for c, lo, hi in called]
    if len(ends) == 1:  # binary: the positives
        low, high = (intervals.interval(e, level) for e in ends[0])
        return {**low, "high": high["high"]}
    n, j = len(y), len(np.unique(patients))
    low = intervals.interval(intervals.mean_of([e[0] for e in ends], n, j), level)
    high = intervals.interval(intervals.mean_of([e[1] for e in ends], n, j), level)
    return {**low, "high": high["high"]}


def ece_interval(y: np.ndarray, prob: np.ndarray, patients: np.ndarray, bins: int, n: int,
                 level: float, seed: int) -> dict:
    """Percentile interval of the ECE over ``n`` patient resamples, with its n."""
    uniq, pidx = np.unique(patients, return_inverse=True)
    n_eff = float(len(y)) if len(uniq) == len(y) else float(len(uniq))
    out = {"low": None, "high": None, "n": len(y), "n_patients": len(uniq),
           "n_eff": round(n_eff, 2), "small_n": n_eff < intervals.MIN_N_EFF}
    if n == 0:
        return out
    conf = prob.max(axis=1)
    gap = (prob.argmax(axis=1) == y) - conf  # per sample: correct minus confidence
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    per_bin = np.zeros((len(y), bins))
    per_bin[np.arange(len(y)), which] = gap
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(uniq), np.full(len(uniq), 1.0 / len(uniq)), size=n)
    block = max(1, _BOOTSTRAP_CELLS // len(y))  # bounded memory: block x N weights at a time
    vals = np.concatenate([
        np.abs(w @ per_bin).sum(axis=1) / w.sum(axis=1)
        for w in (counts[b:b + block, pidx].astype(np.float64) for b in range(0, n, block))])
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(vals, [alpha, 1.0 - alpha])
    return {**out, "low": _clean(lo), "high": _clean(hi)}


def compute(y: np.ndarray, prob: np.ndarray, patients: np.ndarray, class_names: list[str],
            bootstrap: int = 1000, ci: float = 0.95, bins: int = 10, seed: int = 0,
            val: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Every metric of metrics.json (see the module docstring for conventions).

    ``y``, ``prob``, ``patients`` are the test split. ``val`` (labels, probabilities,
    patients of the validation split) chooses the operating point; without it
    ``operating_point`` and ``sensitivity_at_95_specificity`` are ``None``: they are never
    chosen on the split they report.
    """
    y = np.asarray(y, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    k = len(class_names)
    if prob.shape != (len(y), k):
        raise ValueError(f"probabilities have shape {prob.shape}, expected ({len(y)}, {k})")
    if len(y) == 0:
        raise ValueError("no test samples to evaluate")
    op, called = None, None
    if val is not None:
        val_y, val_prob = np.asarray(val[0], dtype=np.int64), np.asarray(val[1], dtype=np.float64)
        if val_prob.shape != (len(val_y), k) or len(val_y) == 0:
            raise ValueError(f"validation probabilities have shape {val_prob.shape}, expected "
                             f"({len(val_y)}, {k}) with at least one sample")
        op, called = operating_point(val_y, val_prob, np.asarray(val[2]), y, prob,
                                     class_names)
    pred = prob.argmax(axis=1)
    cm = confusion_matrix(y, pred, k)
    ones = np.ones((1, len(y)))
    rates = {name: float(v[0]) for name, v in _rates(y, pred, prob, ones).items()}
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    # a class never predicted has precision 0 (as scikit-learn's default), if it occurs at all
    precision_c = np.where(cm.sum(axis=0) > 0, _div(tp, cm.sum(axis=0)),
                           np.where(support > 0, 0.0, np.nan))
    recall_c = recall_per_class(cm)
    f1_c = np.where(precision_c + recall_c > 0,
                    _div(2 * precision_c * recall_c, precision_c + recall_c),
                    np.where(support > 0, 0.0, np.nan))
    spec_c = _div(cm.sum() - cm.sum(axis=0) - cm.sum(axis=1) + tp, cm.sum() - cm.sum(axis=1))
    if k == 2:
        precision, f1 = precision_c[1], f1_c[1]
    else:
        precision, f1 = _nanmean(precision_c), _nanmean(f1_c)
    ece, _ = expected_calibration_error(y, prob, bins)
    per_class = {
        name: {"sensitivity": _clean(recall_c[c]), "specificity": _clean(spec_c[c]),
               "precision": _clean(precision_c[c]), "f1": _clean(f1_c[c]),
               "support": int(cm[c].sum())}
        for c, name in enumerate(class_names)
    }
    return {
        "accuracy": _clean(rates["accuracy"]),
        "balanced_accuracy": _clean(rates["balanced_accuracy"]),
        "auc": _clean(rates["auc"]),
        "sensitivity": _clean(rates["sensitivity"]),
        "specificity": _clean(rates["specificity"]),
        "precision": _clean(precision),
        "f1": _clean(f1),
        "ece": _clean(ece),
        OPERATING_POINT_METRIC: op["test_sensitivity"] if op else None,
        "operating_point": op,
        "n_test": len(y),
        "n_test_patients": len(np.unique(patients)),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "ci": {"level": ci, "method": CI_METHOD,
               **proportion_intervals(y, pred, prob, patients, ci, called),
               "ece": ece_interval(y, prob, patients, bins, bootstrap, ci, seed)},
    }
