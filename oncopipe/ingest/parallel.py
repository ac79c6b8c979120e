"""Ordered parallel map with bounded memory and a progress bar.

Prepare steps decode thousands of files; decoding is CPU-bound, so it runs in worker
processes. Results come back in input order (so outputs are byte-identical whatever the
worker count), and at most ``workers * 4`` items are in flight, so memory stays bounded by a
few samples per worker even when the consumer (an :class:`~oncopipe.ingest.arrays.ArrayWriter`) is
slower than the decoders.

Progress is a tqdm bar on a terminal; under ``dvc repro`` (stderr not a terminal) it is a log
line every 15 seconds instead, so long stages still show that they are moving.

On a cluster: when the environment names a Dask scheduler (``ONCOPIPE_DASK_SCHEDULER=
tcp://host:8786``), the same items go to that cluster's workers instead, with the same
bounded window and the same order, so the outputs are byte-identical wherever the work ran.
An environment variable, not a param: where work runs must not change any stage's hash.
The workers must see the project folder and the raw data at the same paths (a shared
filesystem) and import the same ``oncopipe``; each task runs in the stage's working
directory, with the ``ONCOPIPE_*`` settings of the stage's environment (input limits, the
patient-id key). A worker lost mid-run is Dask's to handle: its tasks
are rerun elsewhere (up to the scheduler's ``allowed-failures``).

Workers die with the stage: a stage killed with SIGKILL (a user's ``kill -9``, the OOM killer)
runs no cleanup, and its pool's workers would be re-parented to PID 1 and keep decoding for
ever. Each worker asks the Linux kernel for SIGKILL when its parent goes
(``prctl(PR_SET_PDEATHSIG)``), and also runs a watchdog thread that exits the worker once the
stage process is gone or its own parent changes (the fallback where prctl is not available,
e.g. macOS).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

from tqdm import tqdm

from oncopipe.core.atomic import process_alive
from oncopipe.core.errors import InputError

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


SCHEDULER_ENV = "ONCOPIPE_DASK_SCHEDULER"


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def ordered_map(
    fn: Callable[[T], R], items: Sequence[T] | Iterable[T], workers: int = 0, desc: str = "",
    weigh: Callable[[R], int] | None = None, total: int | None = None,
) -> Iterator[R]:
    """Yield ``fn(item)`` for each item, in order; ``workers <= 1`` runs in this process.

    ``fn`` must be a module-level function (it is pickled to the workers). Exceptions in a
    worker propagate to the caller; ``fn`` should turn expected bad input into a value (e.g. a
    rejection reason) rather than raise. When an item is a batch, ``weigh(result)`` says how
    many units its result counts for in the progress (and ``total`` how many there are).
    """
    if total is None:
        total = len(items) if isinstance(items, Sequence) else None
    desc = desc or getattr(fn, "__name__", "items")
    address = os.environ.get(SCHEDULER_ENV, "").strip()
    if address:
        yield from _dask_map(fn, items, address, _progress(desc, total), weigh)
        return
    bar = _progress(desc, total)
    bar_update = (lambda r: bar.update(weigh(r))) if weigh else (lambda r: bar.update())
    try:
        if workers <= 1:
            for item in items:
                result = fn(item)
                yield result
                bar_update(result)
            return
        window: deque[Future] = deque()
        with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            for item in items:
                window.append(pool.submit(fn, item))
                if len(window) >= workers * 4:
                    result = window.popleft().result()
                    yield result
                    bar_update(result)
            while window:
                result = window.popleft().result()
                yield result
                bar_update(result)
    finally:
        bar.close()


def _dask_map(fn: Callable[[T], R], items: Sequence[T] | Iterable[T], address: str,
              bar: tqdm | _LogProgress, weigh: Callable[[R], int] | None = None
              ) -> Iterator[R]:
    """:func:`ordered_map` on the Dask cluster at ``address``, results in input order.

    Items travel in chunks (up to :data:`DASK_CHUNK` items, fewer when there are few items
    per worker thread) because a Dask task costs a few milliseconds of round trips, more than
    a DICOM header read; at most two chunks per worker thread are in flight, and each chunk's
    results are released as soon as they are yielded, so the stage process holds one chunk.
    """
    try:
        from distributed import Client
    except ImportError:
        raise InputError(f"{SCHEDULER_ENV}={address}: the Dask client is not installed "
                         "(pip install -e '.[cluster]')") from None
    try:
        client = Client(address, timeout="30s", set_as_default=False)
    except OSError as exc:
        raise InputError(f"{SCHEDULER_ENV}={address}: cannot reach the Dask scheduler "
                         f"({exc})") from None
    env = {k: v for k, v in os.environ.items()
           if k.startswith("ONCOPIPE_") and k != SCHEDULER_ENV}
    try:
        workers = client.scheduler_info()["workers"]
        threads = sum(w.get("nthreads", 1) for w in workers.values()) or 1
        log.info("Dask scheduler %s: %d workers, %d threads (%s); dashboard %s", address,
                 len(workers), threads, ", ".join(sorted(workers)) or "none yet",
                 client.dashboard_link)
        total = len(items) if isinstance(items, Sequence) else None
        size = DASK_CHUNK if total is None else max(1, min(DASK_CHUNK, total // (threads * 8)))
        window: deque[Any] = deque()  # Dask futures
        for chunk in _chunks(items, size):
            window.append(client.submit(_run_chunk, fn, env, os.getcwd(), chunk, pure=False))
            if len(window) >= threads * 2:
                yield from _take(window, bar, weigh)
        while window:
            yield from _take(window, bar, weigh)
    finally:
        client.close()
        bar.close()


DASK_CHUNK = 16


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _take(window: deque, bar: tqdm | _LogProgress,
          weigh: Callable[[Any], int] | None = None) -> Iterator:
    future = window.popleft()
    try:
        results = future.result()
    finally:
        future.release()
    for result in results:
        yield result
        bar.update(weigh(result) if weigh else 1)


def _run_chunk(fn: Callable[[T], R], env: dict[str, str], cwd: str,
               chunk: list[T]) -> list[R]:
    """Run ``fn`` over ``chunk`` on a Dask worker as the stage would: its ``ONCOPIPE_*``
    settings, and its working directory (items name raw files relative to the project)."""
    os.environ.update(env)
    try:
        os.chdir(cwd)
    except OSError as exc:
        raise RuntimeError(f"Dask worker: the project folder {cwd} is not there ({exc}): "
                           "workers must see the project at the same path") from None
    return [fn(item) for item in chunk]


_PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCHDOG_PERIOD_S = 0.5


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this process when the stage process ``parent_pid`` ends,
    however it ends.

    ``prctl(PR_SET_PDEATHSIG)`` has the kernel send SIGKILL when the worker's parent goes;
    under the ``forkserver`` start method (Python 3.14's default on Linux) that parent is the
    fork server, which itself exits when the stage does. The watchdog covers systems without
    prctl.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no libc symbol: the watchdog still works
            pass
    watch_parent(parent_pid)


def watch_parent(parent_pid: int) -> None:
    """Exit this process, now or within :data:`WATCHDOG_PERIOD_S`, once the stage process
    ``parent_pid`` has gone or this process's own parent has changed (an orphan is
    re-parented to PID 1 or a subreaper)."""
    parent = os.getppid()
    if not process_alive(parent_pid):  # the stage died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid, parent), name="parent-watchdog",
                     daemon=True).start()


def _watch(parent_pid: int, parent: int) -> None:
    while os.getppid() == parent and process_alive(parent_pid):
        time.sleep(WATCHDOG_PERIOD_S)
    os._exit(1)


class _LogProgress:
    """tqdm's ``update``/``close`` as periodic log lines, for output that is not a terminal."""

    def __init__(self, desc: str, total: int | None, every_s: float = 15.0):
        self.desc, self.total, self.every_s = desc, total, every_s
        self.n = 0
        self.start = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            log.info("%s: %d/%s items, %.0f s", self.desc, self.n, self.total or "?",
                     now - self.start)

    def close(self) -> None:
        log.info("%s: %d items in %.1f s", self.desc, self.n, time.monotonic() - self.start)


def _progress(desc: str, total: int | None) -> tqdm | _LogProgress:
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit="item", mininterval=2.0)
    return _LogProgress(desc, total)
