"""Every fuzz family, the way CI runs it: a fixed-seed run with no crash, hang or
out-of-memory, and every regression input in ``tests/data/fuzz/<family>/`` giving the outcome
``expected.json`` records for it.

``FUZZ_CI_N`` (default 300) sets the inputs per family; ``python -m fuzz`` runs the 10,000 per
family that docs/fuzz.md reports.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fuzz import harness
from fuzz.families import all_families

FAMILIES = all_families()
CORPUS = Path(__file__).parent / "data" / "fuzz"
N = int(os.environ.get("FUZZ_CI_N", "300"))


def _regressions() -> list[tuple[str, str, str]]:
    cases = []
    for expected in sorted(CORPUS.glob("*/expected.json")):
        for name, outcome in sorted(json.loads(expected.read_text()).items()):
            cases.append((expected.parent.name, name, outcome))
    return cases


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_fixed_seed_run_finds_nothing(name):
    tally = harness.fuzz_family(FAMILIES[name], N, seed=0)
    assert tally.total == N
    found = [(outcome, detail[-300:]) for outcome, _, detail in tally.findings]
    assert not found, found


def test_every_regression_input_is_listed():
    listed = {(family, name) for family, name, _ in _regressions()}
    on_disk = {(p.parent.name, p.name) for p in CORPUS.glob("*/*.bin")}
    assert on_disk == listed
    assert {family for family, _ in listed} <= set(FAMILIES)


@pytest.mark.parametrize(("family", "name", "outcome"), _regressions(),
                         ids=[f"{f}/{n}" for f, n, _ in _regressions()])
def test_regression_input_gives_its_outcome(family, name, outcome, tmp_path):
    data = (CORPUS / family / name).read_bytes()
    got, detail = harness.run_one(FAMILIES[family], data, tmp_path)
    assert got == outcome, detail[-500:]
