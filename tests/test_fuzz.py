"""Every fuzz family, the way CI runs it, and the regression corpus.

For each family discovered under ``fuzz/families/``: ``FUZZ_CI_N`` inputs (default 300: the
seeds, then mutants from seed 0), each in a forked child under the harness's memory cap and
time limit, give no crash, hang or out-of-memory, and the seeds are accepted. Every input once
found to crash, hang or run out (``tests/data/fuzz/<family>/*.bin``) gives the outcome
recorded for it in ``expected.json`` beside it. ``python -m fuzz`` runs the 10,000 per family
that docs/fuzz.md reports.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fuzz import harness
from fuzz.families import all_families

N = int(os.environ.get("FUZZ_CI_N", "300"))
CORPUS = Path(__file__).resolve().parent / "data" / "fuzz"
FAMILIES = all_families()


def _regressions() -> list:
    cases = []
    for expected in sorted(CORPUS.glob("*/expected.json")):
        family = expected.parent.name
        for name, outcome in sorted(json.loads(expected.read_text()).items()):
            cases.append(pytest.param(family, expected.parent / name, outcome,
                                      id=f"{family}/{name}"))
    return cases


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_fixed_seed_run_has_no_crash_hang_or_oom(family):
    tally = harness.fuzz_family(FAMILIES[family], N, seed=0)
    assert tally.total == N
    bad = [f"{outcome}: {detail[-400:]}" for outcome, _, detail in tally.findings[:3]]
    assert not tally.findings, f"{family}: {len(tally.findings)} found\n" + "\n".join(bad)
    assert tally.counts["accepted"] > 0, f"{family}: no input accepted (the seeds are broken)"


def test_every_regression_file_is_listed_with_its_outcome():
    for folder in sorted(p for p in CORPUS.iterdir() if p.is_dir()):
        assert folder.name in FAMILIES, f"{folder}: no fuzz family of that name"
        listed = json.loads((folder / "expected.json").read_text())
        assert set(listed) == {p.name for p in folder.glob("*.bin")}, folder
        assert set(listed.values()) <= {"accepted", "rejected"}, folder


@pytest.mark.parametrize(("family", "path", "outcome"), _regressions())
def test_a_regression_input_gives_its_expected_outcome(family, path, outcome, tmp_path):
    got, detail = harness.run_one(FAMILIES[family], path.read_bytes(), tmp_path)
    assert got == outcome, detail[-500:]
