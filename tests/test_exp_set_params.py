"""The real ``dvc exp run -S`` changes exactly one line of params.yaml per key it sets.

Runs DVC itself in a temporary git + DVC repository holding the committed params.yaml and a
one-stage dvc.yaml that reads every key set (DVC writes params.yaml back before it runs any
stage, so the pipeline's own stages add nothing to what is tested here but minutes).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from oncopipe import datasets

pytestmark = pytest.mark.process  # minutes: not in the default run, .ci/run runs it

ROOT = Path(__file__).resolve().parents[1]
# one key of every dataset, in a different part of each section; nproc where a user sets it
SETS = {
    "lidc.train.demo.lr": ("3.0e-4", "lr: 0.0003"),
    "mosmed.train.demo.epochs": ("3", "epochs: 3"),
    "pcam.shard.shard_size": ("512", "shard_size: 512"),
    "isic.train.demo.nproc": ("2", "nproc: 2"),
    "breakhis.evaluate.bootstrap": ("500", "bootstrap: 500"),
}


def _run(cwd: Path, *cmd: str) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_dvc_exp_run_set_changes_one_line_per_key(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"noop": {
        "cmd": "python -c pass", "params": sorted(SETS)}}}))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"],
                ["dvc", "config", "core.analytics", "false"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"]):
        _run(tmp_path, *cmd)
    sets = [arg for key, (value, _) in SETS.items() for arg in ("-S", f"{key}={value}")]
    _run(tmp_path, "dvc", "exp", "run", *sets)
    numstat = _run(tmp_path, "git", "diff", "--numstat", "params.yaml").split()
    assert numstat == [str(len(SETS)), str(len(SETS)), "params.yaml"]
    diff = _run(tmp_path, "git", "diff", "-U0", "params.yaml").splitlines()
    added = sorted(line[1:].strip() for line in diff if line.startswith("+ "))
    assert added == sorted(line for _, line in SETS.values())
    # what DVC wrote is valid params: the -S values took
    cfg = datasets.load_config("isic", tmp_path / "params.yaml")
    assert cfg.train.nproc == 2
    assert datasets.load_config("lidc", tmp_path / "params.yaml").train.lr == pytest.approx(3e-4)
