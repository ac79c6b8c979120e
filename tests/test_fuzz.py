"""Every fuzz family survives a fixed-seed run, and every saved finding stays fixed.

For each family under ``fuzz/families``: ``FUZZ_CI_N`` inputs (default 300; seeds first, then
mutants from seed 0), each in a forked child under the harness's memory cap and time limit,
with no crash, hang or out-of-memory. Each regression input under
``tests/data/fuzz/<family>/`` (a crash, hang or out-of-memory found once) gives the outcome
its ``expected.json`` names.
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


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_fixed_seed_run_has_no_crash_hang_or_oom(name):
    tally = harness.fuzz_family(FAMILIES[name], N, seed=0)
    assert tally.total == N
    bad = [(outcome, detail[-500:]) for outcome, _, detail in tally.findings]
    assert not bad, bad


def _regressions() -> list:
    cases = []
    for expected in sorted(CORPUS.glob("*/expected.json")):
        family = expected.parent.name
        for file, outcome in sorted(json.loads(expected.read_text()).items()):
            cases.append(pytest.param(family, expected.parent / file, outcome,
                                      id=f"{family}/{file}"))
    return cases


@pytest.mark.parametrize(("family", "path", "outcome"), _regressions())
def test_a_saved_finding_gives_its_expected_outcome(family, path, outcome, tmp_path):
    assert outcome in harness.OUTCOMES[:2], f"{path}: a finding must now be accepted or rejected"
    got, detail = harness.run_one(FAMILIES[family], path.read_bytes(), tmp_path)
    assert got == outcome, detail
