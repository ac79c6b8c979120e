"""A team shares one prepared dataset through a DVC remote (here a local folder).

One clone runs the stages and ``dvc push``es; a fresh ``git clone`` elsewhere ``dvc pull``s
and then finds nothing to reproduce, with byte-identical outputs: the round trip of
docs/pipeline.md's team set-up, with the real ``dvc`` commands.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from dvc_project import DvcProject

pytestmark = [pytest.mark.slow, pytest.mark.process]
STAGES = ("demo@pcam", "prepare_pcam", "shard@pcam")


def _digests(root: Path) -> dict[str, str]:
    files = sorted(p for p in (root / "data").rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _run(cwd: Path, *cmd: str) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_push_then_pull_in_a_fresh_clone_needs_no_repro(tmp_path):
    team, remote, other = tmp_path / "team", tmp_path / "remote", tmp_path / "other"
    team.mkdir()
    project = DvcProject(team)
    project.run("dvc", "remote", "add", "-d", "shared", str(remote))
    project.run("dvc", "repro", *STAGES)
    project.commit()
    project.run("dvc", "push")
    made = _digests(team)
    assert any(name.endswith(".h5") for name in made)

    _run(tmp_path, "git", "clone", "-q", str(team), str(other))
    _run(other, "dvc", "pull", *STAGES)
    assert _digests(other) == made
    status = _run(other, "dvc", "status", *STAGES)
    assert "up to date" in status, status
    dry = _run(other, "dvc", "repro", "--dry", *STAGES)
    assert "Running stage" not in dry and "Data and pipelines are up to date" in dry, dry
