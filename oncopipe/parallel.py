"""Ordered parallel map with bounded memory and a progress bar.

Prepare steps decode thousands of files; decoding is CPU-bound, so it runs in worker
processes. Results come back in input order (so outputs are byte-identical whatever the
worker count), and at most ``workers * 4`` items are in flight, so memory stays bounded by a
few samples per worker even when the consumer (an :class:`~oncopipe.arrays.ArrayWriter`) is
slower than the decoders.

Progress is a tqdm bar on a terminal; under ``dvc repro`` (stderr not a terminal) it is a log
line every 15 seconds instead, so long stages still show that they are moving.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def ordered_map(
    fn: Callable[[T], R], items: Sequence[T] | Iterable[T], workers: int = 0, desc: str = ""
) -> Iterator[R]:
    """Yield ``fn(item)`` for each item, in order; ``workers <= 1`` runs in this process.

    ``fn`` must be a module-level function (it is pickled to the workers). Exceptions in a
    worker propagate to the caller; ``fn`` should turn expected bad input into a value (e.g. a
    rejection reason) rather than raise.
    """
    total = len(items) if isinstance(items, Sequence) else None
    bar = _progress(desc or getattr(fn, "__name__", "items"), total)
    try:
        if workers <= 1:
            for item in items:
                yield fn(item)
                bar.update()
            return
        window: deque[Future] = deque()
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for item in items:
                window.append(pool.submit(fn, item))
                if len(window) >= workers * 4:
                    yield window.popleft().result()
                    bar.update()
            while window:
                yield window.popleft().result()
                bar.update()
    finally:
        bar.close()


class _LogProgress:
    """tqdm's ``update``/``close`` as periodic log lines, for output that is not a terminal."""

    def __init__(self, desc: str, total: int | None, every_s: float = 15.0):
        self.desc, self.total, self.every_s = desc, total, every_s
        self.n = 0
        self.start = self.last = time.monotonic()

    def update(self) -> None:
        self.n += 1
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
