"""docs/results.md is generated from the committed metrics, never typed by hand."""

from __future__ import annotations

import json
from pathlib import Path

from oncopipe import results
from oncopipe.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_committed_results_doc_matches_committed_metrics():
    assert (ROOT / results.RESULTS_DOC).read_text(encoding="utf-8") == \
        results.render(ROOT / "metrics"), "docs/results.md is stale: run `oncopipe results`"


def test_table_carries_test_figures_intervals_and_validation(tmp_path):
    ds = tmp_path / "metrics" / "toy"
    (ds / "train").mkdir(parents=True)
    (ds / "metrics.json").write_text(json.dumps({
        "balanced_accuracy": 0.875, "accuracy": 0.9, "auc": 0.95, "sensitivity": None,
        "specificity": 1.0, "n_test": 7, "n_test_patients": 7,
        "ci": {"balanced_accuracy": {"low": 0.5, "high": 1.0, "n": 7, "n_patients": 7,
                                     "small_n": True}},
        "operating_point": {"resolved": False, "test_sensitivity": None,
                            "test_sensitivity_range": [0.75, 1.0], "val_negatives": 4,
                            "min_val_negatives": 20}}))
    (ds / "train" / "metrics.json").write_text(json.dumps({"val": {"accuracy": 0.75}}))
    out = tmp_path / "results.md"
    assert main(["results", "--metrics-dir", str(tmp_path / "metrics"), "--out", str(out)]) == 0
    row = next(line for line in out.read_text().splitlines() if line.startswith("| toy"))
    assert ("| 7 (7) | 0.875 (0.500-1.000; n 7/7) † | 0.900 | 0.950 | - | 1.000 | "
            "range 0.750-1.000 (unresolved: 4 val negatives < 20) | accuracy 0.750 |") in row
    assert main(["results", "--metrics-dir", str(tmp_path / "metrics"), "--out", str(out),
                 "--check"]) == 0
    out.write_text("edited by hand\n")
    assert main(["results", "--metrics-dir", str(tmp_path / "metrics"), "--out", str(out),
                 "--check"]) == 1


def test_every_committed_demo_test_split_holds_enough_patients_for_an_interval():
    """The demo sizes (params.yaml ``<ds>.demo``) keep each test split at MIN_N_EFF patients or
    more (PCam: images, each its own unit), so a perfect demo score has an informative
    interval; shrinking a demo below that fails here, not silently in docs/results.md."""
    from oncopipe.learn.intervals import MIN_N_EFF

    found = sorted((ROOT / "metrics").glob("*/metrics.json"))
    assert found
    for path in found:
        m = json.loads(path.read_text(encoding="utf-8"))
        assert m["n_test_patients"] >= MIN_N_EFF, (path.parent.name, m["n_test_patients"])
        assert m["ci"]["accuracy"]["n_patients"] == m["n_test_patients"]
