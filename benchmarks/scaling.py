"""Where preparation runs: 1 local process, 2 local processes, a 2-worker Dask cluster.

Runs the two fan-out-heavy stages as users run them (``python -m stages.lidc_lesions`` and
``python -m stages.prepare pcam``, each a fresh process in a throw-away copy of the project,
on the demo generators' data scaled by ``--scale``), interleaved round by round:

- ``local, 1 process``: ``workers: 1`` (the fan-out runs in the stage process);
- ``local, 2 processes``: ``workers: 2``;
- ``Dask, 2 workers``: ``ONCOPIPE_DASK_SCHEDULER`` set to a ``dask scheduler`` with two
  single-threaded ``dask worker`` processes on 127.0.0.1 (loopback only; stopped at the end).

Per run: the fan-out's own time (the stage's ``<desc>: N items in S s`` log line, so process
start and the table writes are left out), its throughput, the overhead per item against the
single process (``(S x parallelism - S_1) / N``: compute time the parallel run spent on
anything but the work), and the stage process's peak RSS (``wait4``; the driver only, the
workers are separate processes). Every run's outputs must be byte-identical to the single
process's (checked). The per-item costs also give the projection written into
docs/pipeline.md: the fan-out's wall time for the whole real releases.

    python -m benchmarks --only scaling            # tables into docs/
    python benchmarks/scaling.py --repeats 3 --scale 2
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the harness

from benchmarks import harness  # noqa: E402

METHODS = ("local, 1 process", "local, 2 processes", "Dask, 2 workers")
# (stage command, fan-out log description, the outputs compared, items per real release)
STAGES = {
    "lidc_lesions (DICOM headers)": (["stages.lidc_lesions"], "DICOM headers",
                                     ["data/prepared/lidc/lesions.parquet",
                                      "data/prepared/lidc/lesions_slices.parquet"]),
    "prepare pcam (TIF decode)": (["stages.prepare", "pcam"], "decode pcam",
                                  ["data/prepared/pcam/manifest.parquet"]),
}
# What the projection multiplies: items of the real releases (docs/data.md), per stage.
PROJECTED = (
    ("LIDC-IDRI, 1,018 series (244,527 DICOM files)", "lidc_lesions (DICOM headers)", 244_527),
    ("a 25,000-series CT cohort (~6.0 M DICOM files at 240 per series)",
     "lidc_lesions (DICOM headers)", 6_000_000),
    ("ISIC 2020, 33,126 JPEGs, at the cost per 96x96 TIF", "prepare pcam (TIF decode)", 33_126),
)
WORKER_COUNTS = (1, 8, 64)


def _project(work: Path, scale: int) -> Path:
    """A copy of the project with demo data ``scale`` times the default size."""
    proj = work / "project"
    for name in ("oncopipe", "stages"):
        shutil.copytree(ROOT / name, proj / name, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["lidc"]["demo"]["n_patients"] *= scale
    params["pcam"]["demo"]["n_train"] *= scale
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for ds in ("lidc", "pcam"):
        _run(proj, ["stages.demo", ds], {})
    return proj


def _set_workers(proj: Path, workers: int) -> None:
    params = yaml.safe_load((proj / "params.yaml").read_text())
    for ds in ("lidc", "pcam"):
        params[ds]["prepare"]["workers"] = workers
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _run(proj: Path, args: list[str], env: dict[str, str]) -> tuple[str, int]:
    """Run ``python -m <args>`` in ``proj``: (stderr, peak RSS in bytes of that process)."""
    full = {k: v for k, v in os.environ.items() if k != "ONCOPIPE_DASK_SCHEDULER"}
    full.update(PYTHONPATH=str(proj), ONCOPIPE_LOG="INFO", **env)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", *args], cwd=proj, env=full,
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{text}")
    return text, usage.ru_maxrss * 1024


def _fanout(stderr: str, desc: str) -> tuple[int, float]:
    match = re.search(re.escape(desc) + r": (\d+) items in ([\d.]+) s", stderr)
    if not match:
        raise SystemExit(f"no '{desc}: N items in S s' line in:\n{stderr}")
    return int(match.group(1)), float(match.group(2))


def _digest(proj: Path, outs: list[str]) -> str:
    h = hashlib.sha256()
    for out in outs:
        h.update((proj / out).read_bytes())
    return h.hexdigest()


def _cluster(pythonpath: Path) -> tuple[str, list[subprocess.Popen]]:
    """A scheduler and two single-threaded workers on 127.0.0.1."""
    from distributed import Client

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1"}
    dask = str(Path(sys.executable).parent / "dask")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], **quiet)]
    procs += [subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--no-dashboard",
                                "--host", "127.0.0.1"], **quiet) for _ in range(2)]
    deadline = time.monotonic() + 60
    while True:
        try:
            with Client(address, timeout="5s", set_as_default=False) as client:
                client.wait_for_workers(2, timeout=30)
            return address, procs
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def run(repeats: int, scale: int = 4) -> list[dict]:
    """The records of ``repeats`` interleaved rounds (one warm-up round first)."""
    with tempfile.TemporaryDirectory(prefix="oncopipe-bench-scaling-") as tmp:
        proj = _project(Path(tmp), scale)
        address, procs = _cluster(proj)
        try:
            return harness.load_stamped(lambda: _rounds(proj, address, repeats))
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


def _rounds(proj: Path, address: str, repeats: int) -> list[dict]:
    setups = {METHODS[0]: (1, {}), METHODS[1]: (2, {}),
              METHODS[2]: (1, {"ONCOPIPE_DASK_SCHEDULER": address})}
    samples: dict[tuple[str, str], list[tuple[int, float, int]]] = {}
    digests: dict[tuple[str, str], set[str]] = {}
    for round_ in range(repeats + 1):
        for method, (workers, env) in setups.items():
            _set_workers(proj, workers)
            for stage, (args, desc, outs) in STAGES.items():
                stderr, rss = _run(proj, args, env)
                items, seconds = _fanout(stderr, desc)
                digests.setdefault((stage, method), set()).add(_digest(proj, outs))
                if round_:  # round 0 warms caches
                    samples.setdefault((stage, method), []).append((items, seconds, rss))
    records = []
    for stage in STAGES:
        base = digests[(stage, METHODS[0])]
        one = statistics.median(s for _, s, _ in samples[(stage, METHODS[0])])
        for method, (workers, env) in setups.items():
            rows = samples[(stage, method)]
            items, sec = rows[0][0], statistics.median(s for _, s, _ in rows)
            parallel = 2 if (workers > 1 or env) else 1
            records.append({
                "benchmark": stage, "method": method, "size": f"{items:,} items",
                "items": items, "median_s": round(sec, 3),
                "items_per_s": round(items / sec, 1),
                "overhead_us_per_item": round(max(0.0, sec * parallel - one) / items * 1e6, 1),
                "peak_rss_mb": round(max(r for _, _, r in rows) / 2**20, 1),
                "per_item_s": sec * parallel / items,
                "check": "identical" if digests[(stage, method)] == base else "DIFFERS"})
    return records


def table(records: list[dict]) -> str:
    cols = [harness.Column("method", "{method}", False),
            harness.Column("fan-out (s)", "{median_s:.3f}"),
            harness.Column("items/s", "{items_per_s:,.0f}"),
            harness.Column("overhead per item (µs)", "{overhead_us_per_item:,.0f}"),
            harness.Column("stage peak RSS (MB)", "{peak_rss_mb:,.0f}"),
            harness.Column("outputs vs 1 process", "{check}", False)]
    return harness.grouped_tables(records, lambda _: cols, size_in_caption=True)


def projection(records: list[dict]) -> str:
    """Fan-out wall time of the real releases on 1, 8 and 64 workers, from the per-item
    compute cost (single process) and the Dask overhead per item measured here."""
    by = {(r["benchmark"], r["method"]): r for r in records}
    heads = " | ".join(f"{n} worker{'s' if n > 1 else ''}" for n in WORKER_COUNTS)
    lines = [f"| release | stage measured | {heads} |",
             "| --- | --- |" + " ---: |" * len(WORKER_COUNTS)]
    for label, stage, items in PROJECTED:
        cost = by[(stage, METHODS[0])]["per_item_s"]
        overhead = by[(stage, METHODS[2])]["overhead_us_per_item"] / 1e6
        cells = []
        for n in WORKER_COUNTS:
            seconds = items * cost / n + (items * overhead / n if n > 1 else 0.0)
            cells.append(_duration(seconds))
        lines.append(f"| {label} | {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def docs_blocks(records: list[dict]) -> list[tuple[Path, str, str]]:
    """Generated blocks outside docs/benchmarks.md: (doc, key, text)."""
    return [(ROOT / "docs" / "pipeline.md", "scaling-projection", projection(records))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scale", type=int, default=4, help="demo data x this (default 4)")
    args = ap.parse_args(argv)
    records = run(args.repeats, args.scale)
    print(table(records))
    print(projection(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
