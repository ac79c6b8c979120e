"""Run every side-by-side comparison and write their tables into docs/benchmarks.md.

    pip install -e '.[bench]'
    python -m benchmarks                   # every comparison, 7 interleaved rounds
    python -m benchmarks --only mosmed shard_read --repeats 9
    python -m benchmarks --quick --doc /tmp/b.md   # smoke test: tiny inputs, 2 rounds

Each comparison module under ``benchmarks/`` has ``comparisons(work, quick)``; the harness
(``benchmarks/harness.py``) times them interleaved and checks every method's output against
ours. The LIDC comparisons and the shard-write / rotate90 ones live in modules with
``run(repeats) -> list[dict]`` (their own interleaving, real-sized inputs); they are included
when those modules are present, except in ``--quick`` mode. The exit status is 1 when any
method's output disagrees with ours.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
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
# LIDC series load / crop path / memory, shard writes and rotate90 (branch h7-lidcperf)
RECORD_MODULES = ("lidc_read", "shard_write", "scaling")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="tiny inputs and 2 rounds: checks that everything runs and agrees")
    ap.add_argument("--repeats", type=int, default=None,
                    help="interleaved rounds, median reported (default 7, quick 2)")
    ap.add_argument("--only", nargs="*", default=None, metavar="MODULE",
                    help=f"a subset of {', '.join(MODULES + RECORD_MODULES)}")
    ap.add_argument("--doc", type=Path, default=harness.DOC, help="the Markdown file to update")
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
        if args.quick and not args.only:  # real-sized inputs only: not part of the smoke test
            print(f"[{name}] skipped in --quick mode (name it with --only to run it)")
            continue
        if importlib.util.find_spec(f"benchmarks.{name}") is None:
            print(f"[{name}] module not present: its tables are left as they are")
            continue
        module = importlib.import_module(f"benchmarks.{name}")
        load = os.getloadavg()[0]
        records = module.run(repeats)
        tables = module.table(records) if hasattr(module, "table") else \
            harness.records_table(records)
        text = (f"`benchmarks/{name}.py`, {repeats} interleaved rounds; load average {load:.2f} "
                f"before, {os.getloadavg()[0]:.2f} after.\n\n{tables}")
        print(text, "\n")
        harness.write_block(args.doc, name, text)
        for doc, key, block in getattr(module, "docs_blocks", lambda _: [])(records):
            harness.write_block(doc, key, block)
    harness.write_block(args.doc, "environment",
                        f"Generated {started} by `python -m benchmarks"
                        f"{' --quick' if args.quick else ''} --repeats {repeats}` on "
                        + harness.environment())
    for line in disagreements:
        print(f"DISAGREES: {line}", file=sys.stderr)
    return 1 if disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
