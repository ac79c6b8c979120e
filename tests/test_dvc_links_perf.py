"""One small dataset (PCam) through the real dvc.yaml with the project's cache link type:
outputs are linked to the cache, not copied; every stage replaces its outputs (a forced
second run succeeds on read-only links and leaves the cache intact); every stage writes its
throughput files, which stay out of dvc.lock, out of git and out of DVC's metrics views."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
from dvc_project import DvcProject

DS = "pcam"
CHAIN = [f"demo@{DS}", f"prepare_{DS}", f"shard@{DS}", f"train@{DS}", f"evaluate@{DS}"]
STAGES = ("demo", "prepare", "shard", "train", "evaluate")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_linked_outputs_replaced_not_rewritten_and_perf_metrics(tmp_path: Path) -> None:
    project = DvcProject(tmp_path)
    params = project.params
    params["datasets"] = [DS]
    params[DS]["demo"].update(n_train=40, n_test=2)
    params[DS]["prepare"]["workers"] = 1
    params[DS]["shard"].update(shard_size=16)
    params[DS]["train"]["demo"].update(epochs=1, batch_size=16, threads=1)
    params[DS]["evaluate"] = {"bootstrap": 20}
    project.write_params()
    project.commit()
    project.run("dvc", "repro", "--single-item", *CHAIN)

    # linked, not copied: the workspace file is the cache file (same inode), read-only
    array = tmp_path / "data" / "prepared" / DS / "images.npy"
    cached = tmp_path / ".dvc" / "cache" / "files" / "md5" / md5(array)[:2] / md5(array)[2:]
    assert array.stat().st_ino == cached.stat().st_ino
    assert not array.stat().st_mode & stat.S_IWUSR

    # every stage replaces its outputs: a forced re-run over read-only links succeeds, and
    # the cache still holds what its names say
    project.run("dvc", "repro", "--force", "--single-item", *CHAIN)
    assert "up to date" in project.run("dvc", "status", *CHAIN)
    for f in (tmp_path / ".dvc" / "cache" / "files" / "md5").rglob("*"):
        if f.is_file() and not f.name.endswith(".dir"):
            assert md5(f) == f.parent.name + f.name, f"cache file {f} was written into"

    for stage in STAGES:
        perf = json.loads((tmp_path / "metrics" / DS / "perf" / f"{stage}.json").read_text())
        assert perf["stage"] == stage and perf["seconds"] > 0 and perf["peak_rss_mb"] > 0
        assert perf["items"] > 0 and perf["items_per_s"] > 0
    lock = (tmp_path / "dvc.lock").read_text()
    assert f"metrics/{DS}/perf" not in lock  # timings never make dvc.lock irreproducible
    status = project.run("git", "status", "--porcelain", "--untracked-files=all", "--",
                         "dvc.lock", "metrics/")  # what CI checks after its repro
    assert f"metrics/{DS}/perf" not in status
    shown = json.loads(project.run("dvc", "metrics", "show", "--json"))
    files = {p for rev in shown.values() for p in rev.get("data", {})}
    # only model figures in DVC's views; the timings are read when named
    assert f"metrics/{DS}/summary.json" in files
    assert not any("/perf/" in f for f in files)
    named = json.loads(project.run("dvc", "metrics", "show", "--json",
                                   f"metrics/{DS}/perf/train.json"))
    assert any(f.endswith("perf/train.json") for rev in named.values()
               for f in rev.get("data", {}))
