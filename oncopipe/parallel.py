"""Ordered parallel map with bounded memory and a progress bar.

Prepare steps decode thousands of files; decoding is CPU-bound, so it runs in worker
processes. Results come back in input order (so outputs are byte-identical whatever the
worker count), and at most ``workers * 4`` items are in flight, so memory stays bounded by a
few samples per worker even when the consumer (an :class:`~oncopipe.arrays.ArrayWriter`) is
slower than the decoders.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

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
    bar = tqdm(total=total, desc=desc or getattr(fn, "__name__", "items"), unit="item",
               mininterval=2.0, disable=None)
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
