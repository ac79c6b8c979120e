"""A throw-away copy of the project, for tests that run stages through DVC.

DVC holds a lock on its repository and writes ``dvc.lock`` and outputs beside ``dvc.yaml``,
so stage tests never run in the working tree: they copy the code, ``dvc.yaml`` and a params
file adjusted to tiny demo sizes into ``tmp_path``, make it a git + DVC repository, and run
``dvc`` there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def cache_type() -> str:
    """``cache.type`` of the project's committed .dvc/config."""
    match = re.search(r"^\s*type\s*=\s*\"?([\w,]+)\"?\s*$", (ROOT / ".dvc" / "config").read_text(),
                      re.M)
    assert match, ".dvc/config sets no cache.type"
    return match.group(1)


class DvcProject:
    def __init__(self, root: Path, dvc_yaml: dict | None = None):
        """Copy the project into ``root``; ``dvc_yaml`` replaces the real pipeline if given."""
        self.root = root
        for name in ("oncopipe", "stages"):
            shutil.copytree(ROOT / name, root / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        for name in (".dvcignore", ".gitignore", "pyproject.toml", "dvc.yaml"):
            shutil.copy(ROOT / name, root / name)
        if dvc_yaml is not None:
            (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
        self.params = yaml.safe_load((ROOT / "params.yaml").read_text())
        self.write_params()
        self.run("git", "init", "-q")
        self.run("dvc", "init", "-q")
        self.run("dvc", "config", "core.analytics", "false")
        # the project's cache link type, so every DVC test runs stages the way users do
        # (hardlinked outputs are read-only: a stage that writes into one fails here)
        self.run("dvc", "config", "cache.type", cache_type())

    def write_params(self) -> None:
        (self.root / "params.yaml").write_text(yaml.safe_dump(self.params, sort_keys=False))

    def commit(self) -> None:
        self.run("git", "add", "-A")
        self.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")

    def run(self, *cmd: str) -> str:
        """Run ``cmd`` in the copy; fail the test with its output if it fails."""
        done = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout
