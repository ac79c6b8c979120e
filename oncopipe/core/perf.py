"""Per-stage throughput as DVC metrics: ``metrics/<dataset>/perf/<stage>.json``.

Each stage script's ``main`` is decorated with :func:`measured`; the stage reports what it
processed with :func:`items`. When ``main`` returns, one JSON file records wall seconds,
items, items/s, CPU seconds and the peak resident memory of the stage process and of its
largest worker process, so ``dvc metrics show`` / ``dvc metrics diff`` put a speed or memory
regression beside the accuracy figures.

Why the files are not stage outputs: DVC writes the hash of every stage output, ``cache:
false`` included, into ``dvc.lock``, and timings differ on every run and every machine, so
``dvc.lock`` would never be reproducible (CI runs ``git diff --exit-code dvc.lock metrics/``
after ``dvc repro``). They are declared in the top-level ``metrics:`` list of dvc.yaml
instead (DVC reads them from the workspace; nothing about them enters ``dvc.lock``) and
``metrics/*/perf/`` is gitignored. docs/pipeline.md ("Throughput metrics") says how to
compare two runs.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from oncopipe.core.atomic import write_text

ROOT = Path("metrics")
_counted: dict[str, float | str] = {}


def items(n: int, unit: str = "items") -> None:
    """Record what the running stage processed (``n`` of ``unit``), for its perf metrics."""
    _counted.update(items=int(n), unit=unit)


def rows(parquet: str | os.PathLike) -> int:
    """Row count of a Parquet file from its footer (e.g. a prepared manifest's samples)."""
    return pq.ParquetFile(parquet).metadata.num_rows


def _peak_mb(who: int) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)  # Linux: KiB


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (prepare's worker processes)."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def record(stage: str, seconds: float, cpu_seconds: float) -> dict:
    """The metrics of one stage run (``items`` as recorded, or absent)."""
    out: dict = {"stage": stage, "seconds": round(seconds, 3),
                 "cpu_seconds": round(cpu_seconds, 3),
                 "peak_rss_mb": _peak_mb(resource.RUSAGE_SELF),
                 "peak_rss_workers_mb": _peak_mb(resource.RUSAGE_CHILDREN)}
    if "items" in _counted:
        out.update(items=_counted["items"], unit=_counted["unit"],
                   items_per_s=round(int(_counted["items"]) / max(seconds, 1e-9), 3))
    return out


def measured(stage: str, dataset: str | None = None) -> Callable:
    """Decorate a stage's ``main(argv)``: time it, then write ``metrics/<ds>/perf/<stage>.json``.

    The dataset is ``dataset`` if given, else the stage's first argument. Nothing is written
    when ``main`` raises, and under ``torchrun`` only rank 0 writes.
    """

    def wrap(main: Callable) -> Callable:
        @functools.wraps(main)
        def run(argv: list[str] | None = None):
            args = argv if argv is not None else sys.argv[1:]
            name = dataset or (args[0] if args else None)
            _counted.clear()
            start, cpu = time.perf_counter(), _cpu_seconds()
            result = main(argv)
            if name is not None and os.environ.get("RANK", "0") == "0":
                metrics = record(stage, time.perf_counter() - start, _cpu_seconds() - cpu)
                write_text(ROOT / name / "perf" / f"{stage}.json",
                           json.dumps(metrics, indent=2, sort_keys=True) + "\n")
            return result

        return run

    return wrap
