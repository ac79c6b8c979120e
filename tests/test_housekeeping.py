"""Crash-safe housekeeping: what a killed run left is swept by whichever stage starts next, a
damaged dvc.lock is named with its fix, and a full disk is one line naming the path.

Real processes (the stage scripts as DVC runs them) and a real full filesystem (a 1 MiB
tmpfs, which needs root; skipped where mounting is not allowed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from oncopipe import datasets
from oncopipe.core.atomic import sweep_orphans, write_bytes
from oncopipe.core.errors import DiskFullError
from oncopipe.train import training

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def _project(root: Path) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["pcam"]["demo"].update(n_train=10, n_test=2)
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def _stage(project: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=project, env=ENV,
                          capture_output=True, text=True, timeout=300)


def _leftovers(project: Path, pid: int) -> dict[str, Path]:
    """What a run killed inside prepare, shard and train leaves (paths by kind)."""
    found = {
        "scratch": project / "data/prepared" / f".pcam.{pid}.a1b2c3d4",
        "shard temp": project / "data/shards/pcam" / f".index.parquet.tmp-{pid}",
        "checkpoint temp": project / "models/pcam" / f".model.pt.tmp-{pid}",
        "metrics temp": project / "metrics/pcam/plots" / f".roc.csv.tmp-{pid}",
    }
    for kind, path in found.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "scratch":
            (path / "arrays").mkdir(parents=True)
            (path / "arrays" / "x.npy").write_bytes(b"\0" * 1000)
        else:
            path.write_bytes(b"partial")
    return found


def test_any_stage_sweeps_what_killed_runs_of_other_stages_left(tmp_path):
    project = _project(tmp_path / "project")
    dead = _leftovers(project, _dead_pid())
    alive = _leftovers(project, os.getppid())  # pytest's parent: a run still going
    users = [project / "data" / ".cache.a1b2c3d4", project / "data" / ".notes.tmp"]
    for path in users:
        path.mkdir(parents=True)
    done = _stage(project, "stages.demo", "pcam")  # a stage that touches none of them
    assert done.returncode == 0, done.stderr
    assert not [p for p in dead.values() if p.exists()]
    assert all(p.exists() for p in alive.values())
    assert all(p.exists() for p in users)  # no pid in the name: not ours to remove
    assert (project / "data/demo/pcam").is_dir()


def test_sweep_looks_only_a_few_levels_down(tmp_path):
    deep = tmp_path / "data/demo/lidc/LIDC-IDRI-0001/study" / f".x.tmp-{_dead_pid()}"
    deep.parent.mkdir(parents=True)
    deep.write_text("")
    shallow = tmp_path / "data/prepared" / f".y.tmp-{_dead_pid()}"
    shallow.parent.mkdir(parents=True)
    shallow.write_text("")
    assert sweep_orphans(tmp_path / "data") == [shallow]
    assert deep.exists()  # inside a raw tree, where no writer of ours puts temporaries


@pytest.mark.parametrize("lock", ["schema: '2.0'\nstages:\n  demo@pcam:\n    cmd: [", "- a\n"])
def test_a_damaged_dvc_lock_stops_the_stage_with_the_fix(tmp_path, lock):
    project = _project(tmp_path / "project")
    (project / "dvc.lock").write_text(lock)
    done = _stage(project, "stages.demo", "pcam")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("demo: dvc.lock: damaged"), done.stderr
    assert "git checkout dvc.lock" in lines[0] and "dvc commit" in lines[0]
    assert not (project / "data/demo/pcam").exists()


def test_the_recovery_of_dvc_lock_is_documented():
    text = (REPO / "docs/pipeline.md").read_text()
    assert "git checkout dvc.lock" in text and "dvc commit" in text


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB filesystem of its own."""
    mount = tmp_path / "small"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    # lazy: a failed torch writer keeps its (already unlinked) file open until collected
    subprocess.run(["umount", "--lazy", str(mount)], check=True)


def test_a_full_disk_is_one_line_naming_the_path_and_the_space(full_disk):
    out = full_disk / "prepared" / "images.npy"
    with pytest.raises(DiskFullError) as caught:
        write_bytes(out, b"\1" * (3 << 20))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{out}: no space left")
    assert "needs more than" in message and "free there" in message
    assert list((full_disk / "prepared").iterdir()) == []  # the partial temporary is gone


def test_a_full_disk_while_saving_a_checkpoint_names_the_checkpoint(full_disk):
    path = full_disk / "model.pt"
    with pytest.raises(DiskFullError, match=r"model\.pt: no space left"):
        training._save({"model": torch.zeros(1 << 20)}, path)
    assert list(full_disk.iterdir()) == []


def test_a_stage_on_a_full_disk_ends_with_one_line(full_disk, tmp_path):
    """prepare with its worker pool: one line, and no traceback from the pool's teardown."""
    project = _project(full_disk / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["pcam"]["raw"] = str(tmp_path / "raw")  # the raw data on a disk with room
    params["pcam"]["demo"].update(n_train=200)
    params["pcam"]["prepare"]["workers"] = 2
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cfg = datasets.load_config("pcam", project / "params.yaml")
    datasets.spec("pcam").write_demo(cfg, cfg.raw)
    done = _stage(project, "stages.prepare", "pcam")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("prepare: ")]
    assert len(lines) == 1 and "data/prepared/" in lines[0], done.stderr
    assert "no space left on the device" in lines[0] and "free there" in lines[0]
    assert not (project / "data/prepared/pcam").exists()
    assert [p.name for p in (project / "data/prepared").iterdir()] == []  # scratch removed
