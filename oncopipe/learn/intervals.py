"""Confidence intervals that keep their coverage at small n, at 0% and at 100%.

A percentile bootstrap cannot go below a perfect score (6 of 6 right gives ``[1.0, 1.0]``)
and, over 3 patients, has 10 distinct resamples. Proportions therefore get a Clopper-Pearson
(exact binomial) interval:

- samples independent (one sample per patient in the denominator): the exact interval of
  ``x`` successes in ``n``;
- patients holding several samples: Korn and Graubard's (1998) version for clustered data,
  the exact interval at an effective sample size ``n_eff = p(1-p) / var(p)``, the variance
  that of a ratio estimator over patients, with their degrees-of-freedom correction, and
  ``n_eff`` at most ``n``. When that variance cannot be estimated (``p`` is 0 or 1, or a
  single patient), ``n_eff`` is the number of patients: as if each patient's samples were
  copies of one.

Means of per-class figures (balanced accuracy, macro sensitivity/specificity/AUC) get the
exact interval at ``n_eff = K^2 / sum(1/n_eff_c)``, which is conservative: the mean of the
classes' ``p_c(1-p_c)`` is at most ``p(1-p)``. AUC's variance is at most
``AUC(1-AUC) / min(n_pos, n_neg)`` (van Dantzig's bound), so an AUC is treated as a
proportion over the smaller class (its patients when they hold several samples).

``benchmarks/coverage.py`` simulates the coverage of these intervals against the patient
bootstrap and Wilson's interval; its table is in docs/intervals.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

# Fewer independent cases than this and one case moves a figure by more than 5 points:
# the figure is flagged ``small_n`` in metrics.json, docs/results.md and the web page.
MIN_N_EFF = 20


@dataclass(frozen=True)
class Proportion:
    """A proportion and the sizes behind it: ``n`` samples of ``patients`` patients,
    ``n_eff`` the independent cases they are worth."""

    p: float
    n: int
    patients: int
    n_eff: float


def clopper_pearson(x: float, n: float, level: float) -> tuple[float, float]:
    """Exact binomial interval of ``x`` successes in ``n`` trials (both may be fractional,
    as at an effective sample size); ``(nan, nan)`` for ``n == 0``."""
    if n <= 0:
        return math.nan, math.nan
    a = (1.0 - level) / 2.0
    x = min(max(x, 0.0), n)
    lo = 0.0 if x <= 0 else float(stats.beta.ppf(a, x, n - x + 1))
    hi = 1.0 if x >= n else float(stats.beta.ppf(1.0 - a, x + 1, n - x))
    return lo, hi


def wilson(x: float, n: float, level: float) -> tuple[float, float]:
    """Wilson's score interval (compared with Clopper-Pearson in the coverage simulation)."""
    if n <= 0:
        return math.nan, math.nan
    z = float(stats.norm.ppf(1.0 - (1.0 - level) / 2.0))
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def clustered(hit: np.ndarray, patients: np.ndarray, level: float) -> Proportion:
    """The proportion of ``hit`` (bool per sample) and its effective sample size, samples
    grouped by ``patients`` (see the module docstring)."""
    n = len(hit)
    if n == 0:
        return Proportion(math.nan, 0, 0, 0.0)
    _, idx = np.unique(patients, return_inverse=True)
    m = np.bincount(idx).astype(np.float64)
    a = np.bincount(idx, weights=hit.astype(np.float64))
    j = len(m)
    p = float(a.sum() / n)
    if j == n:  # one sample per patient: independent
        return Proportion(p, n, j, float(n))
    if j < 2 or p in (0.0, 1.0):
        return Proportion(p, n, j, float(j))
    var = j / (j - 1) * float(((a - p * m) ** 2).sum()) / (n * n)
    if var <= 0:
        return Proportion(p, n, j, float(j))
    n_eff = min(float(n), p * (1 - p) / var)
    q = 1.0 - (1.0 - level) / 2.0
    n_eff *= (float(stats.t.ppf(q, n - 1)) / float(stats.t.ppf(q, j - 1))) ** 2
    return Proportion(p, n, j, min(float(n), n_eff))


def mean_of(parts: list[Proportion], n: int, patients: int) -> Proportion:
    """The mean of per-class proportions (classes without samples left out), over ``n``
    samples of ``patients`` patients in all."""
    parts = [q for q in parts if q.n > 0 and not math.isnan(q.p)]
    if not parts:
        return Proportion(math.nan, n, patients, 0.0)
    k = len(parts)
    n_eff = k * k / sum(1.0 / q.n_eff for q in parts)
    return Proportion(float(np.mean([q.p for q in parts])), n, patients, n_eff)


def interval(q: Proportion, level: float) -> dict:
    """The metrics.json entry of a proportion: the exact interval at its effective n, the
    sizes and whether they are too small to mean much."""
    lo, hi = clopper_pearson(q.p * q.n_eff, q.n_eff, level)
    return {"low": _round(lo), "high": _round(hi), "n": q.n, "n_patients": q.patients,
            "n_eff": round(q.n_eff, 2), "small_n": q.n_eff < MIN_N_EFF}


def _round(v: float) -> float | None:
    return None if math.isnan(v) else round(float(v), 6)
