"""One example point per LIDC series, inside a lesion: what `oncopipe predict lidc SERIES
--point X Y Z` needs, for the docs and the tests.

A point picked by hand goes stale when the demo changes (and one outside every scan is refused),
so the examples are computed from the lesion table: for each series, the centre of its largest
nodule >= 3 mm (or, without one, of its largest lesion), in patient mm (LPS), to 0.1 mm.
docs/lidc.md holds those of the first :data:`DOC_PATIENTS` patients (the demo's raw-layout
quirks, every layout among them) as a table between markers; tests/test_docs.py regenerates the
demo and checks that table, the README's example and that each point's crop is centred on
lesion tissue. Rewrite the table after a change of the demo with::

    python -m oncopipe.datasets.lidc.examples docs/lidc.md
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import polars as pl
import yaml

MARK_BEGIN, MARK_END = "<!-- lidc-example-points:begin -->", "<!-- lidc-example-points:end -->"
KIND_ORDER = {"nodule": 0, "non_nodule": 1, "small_nodule": 2}
# patients whose series the docs list: the demo's quirk patients (lidc/demo.py), so every raw
# layout appears, however many patients the demo has
DOC_PATIENTS = 8


def example_points(lesions: pl.DataFrame) -> pl.DataFrame:
    """One row per series of a lesion table (``lesions.parquet``): patient_id, series_dir, and
    x_mm, y_mm, z_mm of its largest nodule's centre (rounded to 0.1 mm), by patient."""
    size = pl.coalesce("diameter_mm", pl.lit(0.0))
    return (lesions.with_columns(pl.col("kind").replace_strict(KIND_ORDER).alias("_rank"),
                                 size.alias("_size"))
            .sort(["series_dir", "_rank", "_size", "lesion_id"],
                  descending=[False, False, True, False])
            .group_by("series_dir", maintain_order=True).first()
            .sort("patient_id", "series_dir")
            .select("patient_id", "series_dir", "lesion_id",
                    *(pl.col(c).round(1) for c in ("x_mm", "y_mm", "z_mm"))))


def documented(points: pl.DataFrame) -> pl.DataFrame:
    """The rows of :func:`example_points` the docs list: the first :data:`DOC_PATIENTS`
    patients' series."""
    first = sorted(points["patient_id"].unique().to_list())[:DOC_PATIENTS]
    return points.filter(pl.col("patient_id").is_in(first))


def table(points: pl.DataFrame, raw: str) -> str:
    """The Markdown table of :func:`documented` points, series folders under ``raw``."""
    rows = ["| series folder | lesion | --point (x y z, mm) |", "| --- | --- | --- |"]
    rows += [f"| `{raw}/{r['series_dir']}` | {r['lesion_id']} | "
             f"`{r['x_mm']:.1f} {r['y_mm']:.1f} {r['z_mm']:.1f}` |"
             for r in documented(points).iter_rows(named=True)]
    return "\n".join(rows)


def demo_points(params_file: Path = Path("params.yaml")) -> tuple[pl.DataFrame, str]:
    """The example points of the demo ``params_file`` describes (written to a temporary folder)
    and its ``raw`` folder: the demo is deterministic, so these are the workspace's points."""
    from oncopipe.core import config
    from oncopipe.datasets.lidc import SPEC, lesions
    from oncopipe.datasets.lidc.demo import write

    params = yaml.safe_load(params_file.read_text())
    cfg = config.load(SPEC, tuple(params.get("datasets", ["lidc"])), params_file)
    with tempfile.TemporaryDirectory(prefix="oncopipe-lidc-points-") as tmp:
        write(cfg.demo, Path(tmp))
        table_, _, _ = lesions.build_tables(Path(tmp), cfg.prepare, "examples")
    return example_points(table_), params["lidc"]["raw"]


def replace_block(text: str, block: str) -> str:
    """``text`` with the part between the markers replaced by ``block``."""
    pattern = re.compile(re.escape(MARK_BEGIN) + ".*?" + re.escape(MARK_END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"markers {MARK_BEGIN} ... {MARK_END} not found")
    return pattern.sub(lambda _: f"{MARK_BEGIN}\n{block}\n{MARK_END}", text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write the demo's example points (one per LIDC "
                                 "series, inside a lesion) into a Markdown file's markers.")
    ap.add_argument("doc", type=Path, help="Markdown file whose markers get the table")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"),
                    help="params file of the demo (default: params.yaml)")
    args = ap.parse_args(argv)
    points, raw = demo_points(args.params)
    args.doc.write_text(replace_block(args.doc.read_text(), table(points, raw)))


if __name__ == "__main__":
    main()
