"""DDP under torchrun, two CPU processes (gloo): ranks stay identical and stop together.

Both tests start real processes through ``torch.distributed.run`` (what ``torchrun`` is): one
drives :mod:`tests.ddp_worker`, the other the train stage itself with ``nproc: 2`` in
``params.yaml``, which re-executes itself under torchrun as ``dvc repro`` would run it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from ddp_worker import EPOCHS, PATIENCE
from synthetic_data import make_prepared

from oncopipe.core.config import ShardParams
from oncopipe.shard.shards import write_shards

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.process]
TIMEOUT = 300  # a rank that left the others behind hangs in a collective: fail, do not wait


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True,
                              timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(cmd)} did not finish in {TIMEOUT}s (ranks diverged?):\n"
                    f"{exc.stderr}")
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    prepared = make_prepared(root / "prepared", (12, 8), 3)
    out = root / "data" / "shards" / "pcam"
    write_shards(prepared, out, ShardParams(shard_size=16), 1, "test-hash")
    return out


def test_ranks_end_identical_and_together_when_one_ranks_metric_would_stop(shards, tmp_path):
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
          str(ROOT / "tests" / "ddp_worker.py"), str(shards), str(tmp_path), "--sulk"],
         tmp_path)
    cards = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # rank 1's own figures stop after 1 + PATIENCE epochs; rank 0's decide, and improve longer
    assert cards[0]["epochs_run"] == cards[1]["epochs_run"] == EPOCHS > 1 + PATIENCE
    assert cards[0] == cards[1] and cards[0]["processes"] == 2
    weights = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    best = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    assert best.keys() == weights[0].keys()
    history = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert history["step"] == EPOCHS - 1  # one curve, written by rank 0 alone


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stage_project(root: Path, shards: Path, **train) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["pcam"]["profile"] = "demo"
    params["pcam"]["train"]["demo"] = {"model": "lenet5", "width": 0.5, "epochs": 2,
                                       "batch_size": 8, "threads": 1, **train}
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "data" / "shards").mkdir(parents=True)
    (root / "data" / "shards" / "pcam").symlink_to(shards)
    return root


def test_train_stage_on_two_nodes_trains_what_nproc_2_trains(shards, tmp_path):
    """``nproc: 2`` re-executes the stage under torchrun on this machine; ``nnodes: 2`` with
    one process each, started as two separate stages meeting at one c10d rendezvous (two
    "machines" on 127.0.0.1), must train the very same weights."""
    one = _stage_project(tmp_path / "one", shards, nproc=2)
    done = _run([sys.executable, "-m", "stages.train", "pcam"], one)
    assert "re-executing as" in done.stderr and "torch.distributed.run" in done.stderr
    card = json.loads((one / "models" / "pcam" / "config.json").read_text())
    assert card["processes"] == 2 and card["train"]["nproc"] == 2
    assert (one / "metrics" / "pcam" / "train" / "metrics.json").is_file()

    nodes = [_stage_project(tmp_path / f"node{i}", shards, nnodes=2) for i in (0, 1)]
    env = {**_env(), "ONCOPIPE_RDZV": f"127.0.0.1:{free_port()}"}
    procs = [subprocess.Popen([sys.executable, "-m", "stages.train", "pcam"], cwd=node, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for node in nodes]
    try:
        outs = [proc.communicate(timeout=TIMEOUT) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    for proc, (_, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
        assert "--nnodes=2" in err and "--rdzv-backend=c10d" in err
    written = [n / "models" / "pcam" / "model.pt" for n in nodes
               if (n / "models" / "pcam" / "model.pt").is_file()]
    assert len(written) == 1  # rank 0's machine writes the model
    assert written[0].read_bytes() == (one / "models" / "pcam" / "model.pt").read_bytes()
    card = json.loads(written[0].with_name("config.json").read_text())
    assert card["processes"] == 2 and card["train"]["nnodes"] == 2


def test_nnodes_without_a_rendezvous_is_one_line(shards, tmp_path):
    node = _stage_project(tmp_path, shards, nnodes=2)
    env = {k: v for k, v in _env().items() if k != "ONCOPIPE_RDZV"}
    done = subprocess.run([sys.executable, "-m", "stages.train", "pcam"], cwd=node, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 2
    assert "needs ONCOPIPE_RDZV=host:port" in done.stderr.strip().splitlines()[-1]
