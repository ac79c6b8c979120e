"""What LIDC's readers marked beyond the lesion table, and how far they agree.

``lesions_ratings.parquet`` (every reader's ratings) and ``lesions_contours.parquet`` (every
reader's outlines, for the nnU-Net export's consensus masks, :mod:`.consensus`), and the data
card's inter-reader agreement section.

Each LIDC lesion was marked by one to four readers (blinded, then unblinded reads), and each
reader rated a nodule >= 3 mm on nine characteristics, malignancy 1-5 among them. The lesion
table keeps the median rating; the spread is here: per lesion with two or more malignancy
ratings, the range (max - min) and the standard deviation (ddof 1) of its ratings, summarised
over the lesions. The lidc_lesions stage writes the per-reader ratings
(``lesions_ratings.parquet``) and this summary as the data card's section
(``datacard_sections.json``, read by the generic data card).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from oncopipe.core.atomic import write_text
from oncopipe.datasets.lidc.reader_xml import RATINGS

SECTIONS_FILE = "datacard_sections.json"  # the name oncopipe.export.datacard reads
RATED = "malignancy"


def ratings_path(lesion_table: Path) -> Path:
    return lesion_table.with_name(f"{lesion_table.stem}_ratings.parquet")


def ratings_frame(rows: list[dict]) -> pl.DataFrame:
    """One row per lesion: its id and, per characteristic, every reader's rating (in the
    order of the lesion's marks; only the marks that rate it)."""
    schema: dict[str, Any] = {"lesion_id": pl.String,
                              **dict.fromkeys(RATINGS, pl.List(pl.Int64))}
    out = [{"lesion_id": r["lesion_id"],
            **{n: [int(m[n]) for m in r["_ratings"] if n in m] for n in RATINGS}}
           for r in rows]
    return pl.DataFrame(out, schema=schema).sort("lesion_id")


CONTOURS_SCHEMA: dict[str, Any] = {"lesion_id": pl.String, "mark": pl.Int64, "k": pl.Int64,
                                   "inclusion": pl.Boolean, "xs": pl.List(pl.Int64),
                                   "ys": pl.List(pl.Int64)}


def contours_path(lesion_table: Path) -> Path:
    return lesion_table.with_name(f"{lesion_table.stem}_contours.parquet")


def contours_frame(rows: list[dict]) -> pl.DataFrame:
    """One row per roi of every reader's mark of the rows' nodules: ``mark`` numbers the
    lesion's marks (one per reader), ``k`` is the slice, ``xs``/``ys`` the outline's pixels."""
    out = [{"lesion_id": r["lesion_id"], "mark": m, "k": int(k), "inclusion": bool(inc),
            "xs": [int(v) for v in pts[:, 0]], "ys": [int(v) for v in pts[:, 1]]}
           for r in rows for m, rois in enumerate(r["_contours"]) for k, inc, pts in rois]
    return pl.DataFrame(out, schema=CONTOURS_SCHEMA).sort("lesion_id", "mark", "k",
                                                          maintain_order=True)


def summarise(table: pl.DataFrame, ratings: pl.DataFrame) -> dict:
    """Readers per lesion by kind, and the spread of the malignancy ratings."""
    readers = {}
    for kind in sorted(set(table["kind"].to_list())):
        counts = table.filter(pl.col("kind") == kind)["n_readers"].value_counts().sort(
            "n_readers")
        readers[kind] = {str(n): int(c) for n, c in counts.iter_rows()}
    lists = [v for v in ratings[RATED].to_list() if v]
    several = [np.asarray(v, dtype=np.float64) for v in lists if len(v) >= 2]
    ranges = [int(v.max() - v.min()) for v in several]
    sds = [float(v.std(ddof=1)) for v in several]
    range_counts = {str(k): ranges.count(k) for k in sorted(set(ranges))}
    return {
        "lesions": len(table),
        "readers_per_lesion": readers,
        "malignancy": {
            "lesions_rated": len(lists),
            "lesions_rated_by_one": len(lists) - len(several),
            "lesions_rated_by_two_or_more": len(several),
            "range_counts": range_counts,
            "range_median": float(np.median(ranges)) if ranges else None,
            "unanimous": ranges.count(0),
            "differ_by_two_or_more": sum(r >= 2 for r in ranges),
            "sd_mean": round(float(np.mean(sds)), 4) if sds else None,
            "sd_median": round(float(np.median(sds)), 4) if sds else None,
        },
    }


def section(figures: dict) -> dict:
    """The data card's section: a title, its Markdown lines and the figures they print."""
    m = figures["malignancy"]
    lines = [f"Over the {figures['lesions']} lesions of the lesion table. Readers per lesion "
             "(up to four read each scan):", "",
             "| kind | 1 reader | 2 readers | 3 readers | 4 readers |",
             "| --- | --- | --- | --- | --- |"]
    for kind, counts in figures["readers_per_lesion"].items():
        lines.append(f"| {kind} | " + " | ".join(str(counts.get(str(n), 0))
                                                 for n in (1, 2, 3, 4)) + " |")
    lines += ["", f"Malignancy ratings (1-5) of {m['lesions_rated']} rated nodules: "
              f"{m['lesions_rated_by_one']} rated by one reader; of the "
              f"{m['lesions_rated_by_two_or_more']} rated by two or more, {m['unanimous']} "
              f"unanimous and {m['differ_by_two_or_more']} whose ratings differ by 2 or more; "
              f"per-lesion range (max - min) median {m['range_median']}, standard deviation "
              f"mean {m['sd_mean']}, median {m['sd_median']}.", ""]
    if m["range_counts"]:
        lines += ["| range of a lesion's ratings | lesions |", "| --- | --- |",
                  *[f"| {k} | {v} |" for k, v in m["range_counts"].items()], ""]
    lines.append("A label made from the median rating hides this spread: lesions whose readers "
                 "disagree are the uncertain ones.")
    return {"title": "Inter-reader agreement", "figures": figures, "lines": lines}


def write_sections(table: pl.DataFrame, ratings: pl.DataFrame, out_dir: Path) -> None:
    write_text(out_dir / SECTIONS_FILE,
               json.dumps({"sections": [section(summarise(table, ratings))]}, indent=2,
                          sort_keys=True) + "\n")
