"""docs/serve.md's screenshots come from the current demo run, never from an old one or by
hand: the record written beside them (``python -m oncopipe.serve.screenshots``) names the
metrics they show and the pictures' own hashes."""

from __future__ import annotations

import json
from pathlib import Path

from oncopipe.serve import screenshots

ROOT = Path(__file__).resolve().parents[1]


def test_the_screenshots_show_the_committed_metrics_and_are_the_generated_ones():
    recorded = json.loads((ROOT / "docs" / screenshots.RECORD).read_text(encoding="utf-8"))
    assert recorded["metrics"] == screenshots.metrics_fingerprint(ROOT), (
        "docs/serve*.png show an older demo run: run `python -m oncopipe.serve.screenshots` "
        "after `dvc repro`")
    assert recorded == screenshots.record(ROOT / "docs", ROOT), (
        "a docs/serve*.png is not the one the command wrote: rerun it")
    doc = (ROOT / "docs" / "serve.md").read_text(encoding="utf-8")
    for name in screenshots.SHOTS:
        assert f"]({name})" in doc
