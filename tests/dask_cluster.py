"""A real Dask cluster for tests: ``dask scheduler`` and ``dask worker`` as separate
processes on 127.0.0.1, and a worker plugin that kills its own worker process mid-run.

The plugin is imported by the workers (``tests/`` is on their ``PYTHONPATH``), so the kill is
a real ``SIGKILL`` of a real worker process, as a lost node would be; ``--no-nanny`` keeps it
dead (a nanny would restart it).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from distributed import Client
from distributed.diagnostics.plugin import WorkerPlugin


class KillAfter(WorkerPlugin):
    """SIGKILL the worker named ``name`` once it has finished ``after`` tasks."""

    def __init__(self, name: str, after: int):
        self.name, self.after, self.done = name, after, 0

    def setup(self, worker) -> None:
        self.worker = worker

    def transition(self, key, start, finish, **kwargs) -> None:
        if self.worker.name == self.name and finish == "memory":
            self.done += 1
            if self.done >= self.after:
                os.kill(os.getpid(), signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Cluster:
    address: str
    scheduler: subprocess.Popen
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)

    def client(self) -> Client:
        return Client(self.address, timeout="30s", set_as_default=False)


@contextmanager
def local_cluster(pythonpath: list[Path], workers: int = 2) -> Iterator[Cluster]:
    """Start a scheduler and ``workers`` single-threaded workers; kill them all (by PID)
    on exit, whatever happened."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath)),
           "OMP_NUM_THREADS": "1"}
    bindir = Path(sys.executable).parent
    procs: list[subprocess.Popen] = []
    try:
        scheduler = subprocess.Popen(
            [str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(scheduler)
        cluster = Cluster(address, scheduler)
        for i in range(1, workers + 1):
            proc = subprocess.Popen(
                [str(bindir / "dask"), "worker", address, "--name", f"w{i}", "--nthreads", "1",
                 "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
            procs.append(proc)
            cluster.workers[f"w{i}"] = proc
        deadline = time.monotonic() + 60
        while True:
            try:
                with cluster.client() as client:
                    client.wait_for_workers(workers, timeout=max(1, deadline - time.monotonic()))
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield cluster
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
