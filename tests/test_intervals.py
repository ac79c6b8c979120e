"""Intervals that keep their coverage at small n: exact values, clustering, the simulation."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks import coverage, harness
from oncopipe.learn import intervals

ROOT = Path(__file__).resolve().parents[1]


def test_clopper_pearson_known_values():
    lo, hi = intervals.clopper_pearson(6, 6, 0.95)
    assert lo == pytest.approx(0.025 ** (1 / 6)) and hi == 1.0  # 0.54, not 1.0
    lo, hi = intervals.clopper_pearson(0, 10, 0.95)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10))
    lo, hi = intervals.clopper_pearson(5, 10, 0.95)
    assert (lo, hi) == (pytest.approx(0.187086, abs=1e-6), pytest.approx(0.812914, abs=1e-6))


def test_clustered_samples_are_worth_fewer_cases():
    hit = np.array([1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1], bool)
    alone = intervals.clustered(hit, np.arange(12), 0.95)
    assert alone.n_eff == 12 and alone.patients == 12
    # patients holding 4 samples each, which agree within a patient: fewer independent cases
    grouped = intervals.clustered(hit, np.repeat(np.arange(3), 4), 0.95)
    assert grouped.p == alone.p and grouped.patients == 3 and grouped.n_eff < 12
    # a perfect score: the variance cannot be estimated, the patients are the cases
    perfect = intervals.clustered(np.ones(12, bool), np.repeat(np.arange(3), 4), 0.95)
    assert perfect.n_eff == 3
    entry = intervals.interval(perfect, 0.95)
    assert entry["high"] == 1.0 and entry["low"] < 0.3 and entry["small_n"]


def test_mean_of_classes_is_at_least_as_wide_as_its_parts_allow():
    a = intervals.Proportion(1.0, 10, 10, 10.0)
    b = intervals.Proportion(1.0, 30, 30, 30.0)
    m = intervals.mean_of([a, b], 40, 40)
    assert m.p == 1.0 and m.n == 40 and m.n_eff == pytest.approx(4 / (1 / 10 + 1 / 30))


def test_quick_coverage_simulation_writes_its_table(tmp_path):
    doc = tmp_path / "intervals.md"
    shutil.copy(ROOT / "docs" / "intervals.md", doc)
    assert coverage.main(["--quick", "--doc", str(doc)]) == 0
    start, end = harness.markers("coverage")
    block = doc.read_text()
    block = block[block.index(start):block.index(end)]
    lows = [float(v) for v in re.findall(r"\(reported\); lowest ([\d.]+)%", block)]
    assert len(lows) == 3 and min(lows) >= 92.0  # few splits in --quick: some noise


def test_committed_coverage_table_shows_at_least_93_percent():
    text = (ROOT / "docs" / "intervals.md").read_text()
    lows = [float(v) for v in re.findall(r"\(reported\); lowest ([\d.]+)%", text)]
    assert len(lows) == 3 and min(lows) >= 93.0
    for n in coverage.SIZES:
        assert re.search(rf"^\| {n} \|", text, re.M), f"no row for n = {n}"
    assert "p = 0.5" in text and "p = 1 " in text
