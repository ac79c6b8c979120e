"""Preparation on a real Dask cluster gives the same bytes as the local run.

A scheduler and two workers run as separate processes on 127.0.0.1; every prepare stage (and
the LIDC lesion stage) runs through the real ``dvc repro`` with ``ONCOPIPE_DASK_SCHEDULER``
set, while a worker plugin kills worker ``w1`` after a few tasks: Dask reruns its tasks on
``w2``. The outputs' hashes must equal those of the committed ``dvc.lock`` (made by the
local run), and with the variable unset ``dvc status`` must find nothing to do.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest
import yaml
from dask_cluster import KillAfter, local_cluster
from dvc_project import ROOT, DvcProject

pytestmark = [pytest.mark.slow, pytest.mark.process]
STAGES = ("lidc_lesions", "prepare_lidc", "prepare_mosmed", "prepare_pcam", "prepare_isic",
          "prepare_breakhis")


def _outs(lock: dict, stage: str) -> dict[str, str]:
    return {o["path"]: o["md5"] for o in lock["stages"][stage]["outs"]}


def test_prepare_on_dask_with_a_worker_killed_is_byte_identical(tmp_path):
    project = DvcProject(tmp_path)
    shutil.copy(ROOT / "dvc.lock", tmp_path / "dvc.lock")
    committed = yaml.safe_load((ROOT / "dvc.lock").read_text())
    project.commit()
    with local_cluster([tmp_path, ROOT / "tests"]) as cluster:
        with cluster.client() as client:
            client.register_plugin(KillAfter("w1", after=5), name="kill-w1")
        env = {**os.environ, "ONCOPIPE_DASK_SCHEDULER": cluster.address,
               "PYTHONPATH": str(tmp_path)}
        done = subprocess.run(["dvc", "repro", "--force", *STAGES], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Dask scheduler tcp://127.0.0.1" in done.stderr + done.stdout
        # w1 really died mid-run (SIGKILL from inside), w2 finished its work
        assert cluster.workers["w1"].wait(timeout=30) == -signal.SIGKILL
        assert cluster.workers["w2"].poll() is None
    ours = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    for stage in STAGES:
        assert _outs(ours, stage) == _outs(committed, stage), stage
    # where the work ran is not part of any stage's hash
    env = {k: v for k, v in os.environ.items() if k != "ONCOPIPE_DASK_SCHEDULER"}
    status = subprocess.run(["dvc", "status", *STAGES], cwd=tmp_path, env=env,
                            capture_output=True, text=True, check=True)
    assert "changed" not in status.stdout and "modified" not in status.stdout, status.stdout


def test_unreachable_scheduler_is_one_line(tmp_path):
    project = DvcProject(tmp_path)
    project.run("dvc", "repro", "demo@pcam")
    env = {**os.environ, "ONCOPIPE_DASK_SCHEDULER": "tcp://127.0.0.1:9",
           "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(["python", "-m", "stages.prepare", "pcam"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(
        "prepare: ONCOPIPE_DASK_SCHEDULER=tcp://127.0.0.1:9: cannot reach the Dask scheduler")
