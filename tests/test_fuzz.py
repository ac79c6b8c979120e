"""The fuzz harness in CI: a fixed-seed run of every parser family, and the regression corpus.

``FUZZ_CI_N`` inputs per family (default 300) must give no crash, hang or out-of-memory; every
input once found to crash, hang or run out (``tests/data/fuzz/<family>/*.bin``) must give the
outcome recorded beside it in ``expected.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fuzz import harness
from fuzz.families import all_families

CORPUS = Path(__file__).parent / "data" / "fuzz"
FAMILIES = all_families()
N = int(os.environ.get("FUZZ_CI_N", "300"))


def _regressions() -> list[tuple[str, str, str]]:
    cases = []
    for expected_file in sorted(CORPUS.glob("*/expected.json")):
        family = expected_file.parent.name
        for name, outcome in sorted(json.loads(expected_file.read_text()).items()):
            cases.append((family, name, outcome))
    return cases


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fixed_seed_run_has_no_crash_hang_or_oom(family):
    tally = harness.fuzz_family(FAMILIES[family], N, seed=0)
    bad = {o: tally.counts[o] for o in ("crash", "hang", "oom") if tally.counts[o]}
    details = [f"{outcome}: {detail[-400:]}" for outcome, _, detail in tally.findings[:3]]
    assert not bad, f"{family}: {bad}\n" + "\n".join(details)
    assert tally.counts["accepted"] > 0, f"{family}: no input accepted (the seeds are broken)"


def test_every_regression_file_is_listed_with_its_outcome():
    for folder in sorted(p for p in CORPUS.iterdir() if p.is_dir()):
        assert folder.name in FAMILIES, f"{folder}: no fuzz family of that name"
        listed = set(json.loads((folder / "expected.json").read_text()))
        assert listed == {p.name for p in folder.glob("*.bin")}, folder
        assert all(v in harness.OUTCOMES[:2] for v in
                   json.loads((folder / "expected.json").read_text()).values())


@pytest.mark.parametrize("family, name, outcome", _regressions())
def test_regression_input_gives_its_expected_outcome(family, name, outcome, tmp_path):
    data = (CORPUS / family / name).read_bytes()
    got, detail = harness.run_one(FAMILIES[family], data, tmp_path)
    assert got == outcome, f"{family}/{name}: {got} ({detail[-400:]})"
