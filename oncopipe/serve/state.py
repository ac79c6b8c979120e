"""The app's settings, what stays loaded between requests (models and configs), and the
worker lanes requests run in.

Models load on first use (lazily) and stay loaded; each request compares the modification
times of ``config.json`` and ``model.pt``, so a model the train stage rewrites is reloaded on
the next request, and likewise the configs when ``params.yaml`` changes. The input limits
are its ``limits:`` section (:mod:`oncopipe.core.limits`), made the process's on every (re)load.

Requests run in two bounded thread pools (:class:`Lanes`): volumes and CT series (seconds of
CPU each) in the heavy lane, 2D images (milliseconds) in the light one, so a CT study never
makes an image wait. Each lane takes a fixed number of requests at once plus a bounded queue;
one more is refused at once (:class:`Busy`, answered 503 with ``Retry-After``) rather than
left to wait behind minutes of work.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch

from oncopipe import datasets, predict
from oncopipe.core import config, limits
from oncopipe.learn.inference import CONFIG_FILE, MODEL_FILE

log = logging.getLogger("oncopipe.serve")
MIB = 1 << 20


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Settings:
    """Where the project lies, the upload limit and the host names answered; the command
    line sets them (what an upload may unpack to is ``params.yaml``'s ``limits:``)."""

    root: Path = Path(".")  # the project: params.yaml, models/, data/, metrics/
    params: Path | None = None  # default root/params.yaml
    models: Path | None = None  # default root/models
    max_upload: int = 512 * MIB  # bytes in one upload (413 beyond)
    hosts: tuple[str, ...] = ()  # names answered besides LOOPBACK_HOSTS (the --host bound)
    heavy_queue: int = 6  # volume / CT series requests waiting beyond the running ones (503)
    light_queue: int = 32  # image requests waiting beyond the running ones (503)

    @property
    def allowed_hosts(self) -> frozenset[str]:
        """``Host`` names (without port or brackets, lower case) the app answers; any other
        is refused, so a hostile site's DNS name rebound to this machine gets nothing."""
        names = {h.strip().strip("[]").lower() for h in self.hosts}
        return frozenset({*LOOPBACK_HOSTS, *names} - {"", "0.0.0.0", "::"})

    @property
    def params_file(self) -> Path:
        return self.params or self.root / config.PARAMS_FILE

    @property
    def models_dir(self) -> Path:
        return self.models or self.root / "models"


class NoModel(LookupError):
    """No trained model for the dataset yet."""


class Misconfigured(RuntimeError):
    """The project itself is unusable (params.yaml missing or invalid): the server's fault."""


@dataclass
class Cache:
    """Loaded models (one per dataset, reloaded when the train stage rewrites them) and
    configs (reloaded when params.yaml changes)."""

    settings: Settings
    lock: threading.Lock = field(default_factory=threading.Lock)
    models: dict = field(default_factory=dict)
    configs: dict = field(default_factory=dict)

    def model(self, dataset: str) -> predict.Predictor:
        folder = self.settings.models_dir / dataset
        files = [folder / CONFIG_FILE, folder / MODEL_FILE]
        if not all(f.is_file() for f in files):
            raise NoModel(f"no model trained yet for {dataset} ({folder} is empty; run "
                          f"`dvc repro train@{dataset}`)")
        stamp = tuple(f.stat().st_mtime_ns for f in files)
        with self.lock:
            hit = self.models.get(dataset)
            if hit is None or hit[0] != stamp:
                started = time.perf_counter()
                hit = (stamp, predict.Predictor(folder))
                self.models[dataset] = hit
                log.info("loaded the %s model from %s in %.2f s", dataset, folder,
                         time.perf_counter() - started)
            return hit[1]

    def config(self, dataset: str) -> config.DatasetConfig:
        path = self.settings.params_file
        stamp = path.stat().st_mtime_ns if path.is_file() else None
        with self.lock:
            hit = self.configs.get(dataset)
            if hit is None or hit[0] != stamp:
                try:
                    hit = (stamp, datasets.load_config(dataset, path))
                except (OSError, ValueError) as exc:
                    raise Misconfigured(f"{path}: {exc}") from None
                self.configs[dataset] = hit
                limits.activate(hit[1].limits)
            return hit[1]


T = TypeVar("T")
HEAVY_KINDS = ("volume", "series")  # a dataset's predict_input.kind sent to the heavy lane


class Busy(RuntimeError):
    """A lane's workers and queue are full; ``retry_after``: seconds until a place is likely
    free (the queue's length times the lane's recent time per request)."""

    def __init__(self, lane: str, retry_after: int):
        super().__init__(f"the server is busy with {lane} requests; try again in "
                         f"{retry_after} s")
        self.retry_after = retry_after


class Lane:
    """A thread pool of ``workers`` threads, each running torch with ``threads`` intra-op
    threads, that holds at most ``workers + queue`` requests (running or waiting)."""

    def __init__(self, name: str, workers: int, threads: int, queue: int):
        self.name, self.workers = name, workers
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix=f"serve-{name}",
                                       initializer=torch.set_num_threads, initargs=(threads,))
        self.places = threading.BoundedSemaphore(workers + queue)
        self.held = 0  # requests running or waiting
        self.seconds = 1.0  # moving average of the time one request takes, for Retry-After
        self._lock = threading.Lock()

    async def run(self, work: Callable[..., T], *args: object) -> T:
        """``work(*args)`` in a worker thread; :class:`Busy` at once when the lane is full.

        A request whose client goes away while it waits is dropped before it starts (its
        place is freed when its work ends or is cancelled, never before)."""
        if not self.places.acquire(blocking=False):
            with self._lock:
                wait = self.seconds * self.held / self.workers
            raise Busy(self.name, max(1, math.ceil(wait)))
        with self._lock:
            self.held += 1
        future = self.pool.submit(self._timed, work, *args)
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _timed(self, work: Callable[..., T], *args: object) -> T:
        started = time.perf_counter()
        try:
            return work(*args)
        finally:
            with self._lock:
                self.seconds = 0.8 * self.seconds + 0.2 * (time.perf_counter() - started)

    def _release(self, _future: object) -> None:
        with self._lock:
            self.held -= 1
        self.places.release()


class Lanes:
    """The heavy lane (volumes and CT series) and the light lane (2D images), each with its
    own workers, so an image never waits for a CT study's worker.

    Every worker runs torch single-threaded unless cores are left over: one request per core
    uses the CPU better than one request spread over several (a batch of one leaves little
    to parallelise, and on a busy machine each parallel region waits for its slowest thread).
    On 2 cores: two CT workers and two image workers, one torch thread each.
    """

    def __init__(self, settings: Settings):
        cores = len(os.sched_getaffinity(0))
        light = max(2, min(cores, 4))
        heavy = max(1, min(cores, 4))
        self.heavy = Lane("CT", heavy, max(1, (cores - light) // heavy), settings.heavy_queue)
        self.light = Lane("image", light, 1, settings.light_queue)

    def of(self, dataset: str) -> Lane:
        """The lane for a request about ``dataset`` (an unknown name: the light one, where
        it is refused in milliseconds)."""
        if dataset in datasets.NAMES and \
                datasets.spec(dataset).predict_input.kind in HEAVY_KINDS:
            return self.heavy
        return self.light

    def close(self) -> None:
        for lane in (self.heavy, self.light):
            lane.pool.shutdown(wait=False, cancel_futures=True)
