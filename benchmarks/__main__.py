"""Run every side-by-side comparison and write their tables into docs/benchmarks.md.

    pip install -e '.[bench]'
    python -m benchmarks                   # every comparison, 7 interleaved rounds
    python -m benchmarks --only mosmed shard_read --repeats 9
    python -m benchmarks --quick --doc /tmp/b.md   # smoke test: tiny inputs, 2 rounds

Each comparison module under ``benchmarks/`` has ``comparisons(work, quick)``; the harness
(``benchmarks/harness.py``) times them interleaved and checks every method's output against
ours. The LIDC comparisons and the shard-write / rotate90 ones live in modules with
``run(repeats) -> list[dict]`` (their own interleaving, real-sized inputs; tiny ones under
``--quick``). The exit status is 1 when any method's output disagrees with ours.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from benchmarks import harness

# comparison modules, in the order of docs/benchmarks.md
MODULES = ("decode", "shard_read", "mosmed_prepare", "training_throughput")
# modules with their own interleaving that return records (``run(repeats) -> list[dict]``):
# LIDC series load / crop path / memory, lidc_lesions memory by file count, shard writes and
# rotate90, local vs Dask fan-out, serve's latency one at a time and under 8 clients, the
# loader's samples/s per recipe (a module's ``REPEATS``, when set, overrides --repeats)
RECORD_MODULES = ("lidc_read", "lidc_memory", "shard_write", "scaling", "serve_latency",
                  "loader_feed")
# their sizes under --quick: tiny, enough to check that they run and agree (scaling starts a
# stage process per run: one timed round; serve_latency: one request per dataset and
# endpoint, then 8 clients x 2)
QUICK_SIZES = {"lidc_read": {"slices": 12, "memory_slices": 12, "n_lesions": 2,
                             "input_slices": 12},
               "lidc_memory": {"files": (200, 400)},
               "shard_write": {"samples": 48, "shape": (3, 16, 16)},
               "scaling": {"scale": 1, "repeats": 1},
               "serve_latency": {"repeats": 1, "clients": 8, "per_client": 2,
                                 "mosmed_size": 128},
               "loader_feed": {"budget": 2**20, "scale": 8}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="tiny inputs and 2 rounds: checks that everything runs and agrees")
    ap.add_argument("--repeats", type=int, default=None,
                    help="interleaved rounds, median reported (default 7, quick 2)")
    ap.add_argument("--only", nargs="*", default=None, metavar="MODULE",
                    help=f"a subset of {', '.join(MODULES + RECORD_MODULES)}")
    ap.add_argument("--doc", type=Path, default=harness.DOC,
                    help="the Markdown file to update (default docs/benchmarks.md)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("monai").setLevel(logging.ERROR)  # "nvImageCodec is not available"
    warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
    repeats = args.repeats or (2 if args.quick else 7)
    if not args.quick and repeats < 5:
        ap.error("--repeats must be >= 5 for published figures (or use --quick)")
    chosen = args.only or list(MODULES + RECORD_MODULES)
    unknown = set(chosen) - set(MODULES + RECORD_MODULES)
    if unknown:
        ap.error(f"unknown module(s): {', '.join(sorted(unknown))}")

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    disagreements = []
    with tempfile.TemporaryDirectory(prefix="oncopipe-bench-") as tmp:
        for name in (m for m in MODULES if m in chosen):
            module = importlib.import_module(f"benchmarks.{name}")
            work = Path(tmp) / name
            work.mkdir()
            for cmp in module.comparisons(work, args.quick):
                print(f"[{name}] {cmp.key}: {len(cmp.methods)} methods x {repeats} rounds",
                      flush=True)
                result = harness.run(cmp, repeats)
                print(harness.table(result) + "\n", flush=True)
                harness.write_block(args.doc, cmp.key, harness.section(result))
                disagreements += [f"{cmp.key}: {r.name}: {r.agreement.text}" for r in result.rows
                                  if r.agreement is not None and not r.agreement.ok]
        for name in (m for m in RECORD_MODULES if m in chosen):
            module = importlib.import_module(f"benchmarks.{name}")
            sizes = dict(QUICK_SIZES[name]) if args.quick else {}
            if args.quick and name in ("lidc_read", "lidc_memory"):
                sizes["workdir"] = Path(tmp) / name
            rounds = sizes.pop("repeats", getattr(module, "REPEATS", repeats))
            load = os.getloadavg()[0]
            records = module.run(rounds, **sizes)
            text = (f"`benchmarks/{name}.py`, {rounds} interleaved rounds; load average "
                    f"{load:.2f} before, {os.getloadavg()[0]:.2f} after.\n\n"
                    f"{module.table(records)}")
            print(text, "\n")
            harness.write_block(args.doc, name, text)
            disagreements += [f"{name}: {line}" for line in text.splitlines()
                              if "DIFFER" in line]
            # blocks for other pages go beside --doc (a smoke run's copy leaves docs/ alone)
            for doc, key, block in getattr(module, "docs_blocks", lambda _: [])(records):
                if (args.doc.parent / doc.name).is_file():
                    harness.write_block(args.doc.parent / doc.name, key, block)
    if not args.only:  # a subset leaves the other tables' stamp alone
        harness.write_block(args.doc, "environment",
                            f"Generated {started} by `python -m benchmarks"
                            f"{' --quick' if args.quick else ''} --repeats {repeats}` on "
                            + harness.environment())
    for line in disagreements:
        print(f"DISAGREES: {line}", file=sys.stderr)
    return 1 if disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
