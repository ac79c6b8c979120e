"""kill -9 leaves nothing behind: pool workers die with their parent, stale scratch goes.

Real processes and real signals: a parent running :func:`oncopipe.ingest.parallel.ordered_map` (and
the real ``prepare`` stage) is killed with SIGKILL, which runs no cleanup in it; its workers
must be gone within 5 s, and the next run must give byte-identical outputs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from oncopipe import datasets
from oncopipe.core.atomic import remove_stale, scratch_dir, write_text
from tests.dataset_params import digest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

POOL_SCRIPT = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from oncopipe.ingest import parallel

def slow(x):
    Path(sys.argv[2], f"started-{x}").touch()
    time.sleep(120)
    return x

if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "ordered_map":  # the real path: prctl and watchdog
        for _ in parallel.ordered_map(slow, range(8), workers=2):
            pass
    else:  # the fallback alone (as without prctl), or workers under a fork server
        init = parallel.watch_parent if mode == "watchdog_only" else parallel.die_with_parent
        context = multiprocessing.get_context("fork" if mode == "watchdog_only" else mode)
        with ProcessPoolExecutor(2, mp_context=context, initializer=init,
                                 initargs=(os.getpid(),)) as pool:
            list(pool.map(slow, range(8)))
"""


def _children(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "(comm)": state, ppid, ...
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        new = _children(todo.pop()) - found
        found |= new
        todo.extend(new)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if state[state.rindex(")") + 2] != "Z":
            alive.add(pid)
    return alive


def _kill_when_workers_run(proc: subprocess.Popen, n: int, timeout_s: float = 60) -> set[int]:
    """SIGKILL ``proc`` as soon as it has ``n`` worker children; returns their pids."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        workers = _children(proc.pid)
        if len(workers) >= n:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return workers
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"the process ended or timed out before it had {n} workers "
                f"(exit {proc.poll()})")


def _assert_gone_within(workers: set[int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while _alive(workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _alive(workers)
    for pid in left:  # do not leave them running whatever the outcome
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers {sorted(left)} survived their parent's SIGKILL"


pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


@pytest.mark.parametrize("mode", ["ordered_map", "watchdog_only", "forkserver"])
def test_workers_die_with_their_killed_parent(tmp_path, mode):
    script = tmp_path / "pool.py"
    script.write_text(POOL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), mode, str(tmp_path)], env=ENV)
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("started-*"))) < 2 and time.monotonic() < deadline:
        assert proc.poll() is None, "the pool's parent ended early"
        time.sleep(0.02)
    workers = _descendants(proc.pid)  # with a fork server: it and its workers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(workers) >= 2
    _assert_gone_within(workers, 5.0)


def _project(root: Path, raw: Path) -> Path:
    root.mkdir()
    params = {"seed": 1, "datasets": ["pcam"],
              "pcam": {"raw": str(raw), "task": "binary",
                       "demo": {"seed": 3, "n_train": 300, "n_test": 3},
                       "prepare": {"workers": 2}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _prepare(project: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stages.prepare", "pcam"], cwd=project,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            **kwargs)


def test_prepare_killed_mid_stage_leaves_nothing_and_reruns_identically(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    killed = _project(tmp_path / "killed", raw)
    cfg = datasets.load_config("pcam", killed / "params.yaml")
    datasets.spec("pcam").write_demo(cfg, raw)
    clean = _project(tmp_path / "clean", raw)

    proc = _prepare(killed)
    workers = _kill_when_workers_run(proc, 2)
    _assert_gone_within(workers, 5.0)
    prepared = killed / "data" / "prepared"
    left = [p.name for p in prepared.iterdir() if p.name.startswith(".pcam.")]
    assert left, "the stage was killed before it made its scratch folder"

    for project in (killed, clean):
        run = _prepare(project)
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err.decode()
    assert not [p for p in prepared.iterdir() if p.name.startswith(".pcam.")]
    assert digest(prepared / "pcam") == digest(clean / "data" / "prepared" / "pcam")
    assert len(digest(prepared / "pcam")) == 5  # images, manifest, sheet, rejects, report


def test_scratch_of_a_live_run_is_kept_and_of_dead_runs_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    live = tmp_path / f".pcam.{os.getppid()}.abcd1234"  # pytest's parent: alive
    stale = [tmp_path / f".pcam.{dead_pid}.x1y2z3w4", tmp_path / ".pcam.k2j3h4g5"]
    other = [tmp_path / f".isic.{dead_pid}.abcdefgh", tmp_path / "pcam"]
    for folder in (live, *stale, *other):
        (folder / "sub").mkdir(parents=True)
    with scratch_dir(tmp_path, "pcam") as scratch:
        assert scratch.name.startswith(f".pcam.{os.getpid()}.")
        assert remove_stale(tmp_path, "pcam") == []  # its own scratch is alive
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, *other))


def test_atomic_write_removes_temporaries_of_killed_writers_only(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_tmp = tmp_path / f".pcam.tmp-{int(dead.stdout)}"
    live_tmp = tmp_path / f".pcam.tmp-{os.getppid()}"  # a writer still running
    for folder in (dead_tmp, live_tmp):
        (folder / "sub").mkdir(parents=True)
    assert remove_stale(tmp_path, "pcam") == []  # a scratch cleaner leaves writers' temps alone
    write_text(tmp_path / "pcam", "done")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["pcam", live_tmp.name])
