"""The slice table written by parts: the same rows, the same bytes as one write when small."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from dataset_params import lidc_demo

from oncopipe.datasets.lidc import lesions, slice_table
from oncopipe.datasets.lidc.params import PrepareParams


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("lidc")
    lidc_demo(root)
    return root, lesions.build_tables(root / "raw", PrepareParams(), "hash")


def test_written_by_parts_it_is_the_table_and_small_ones_are_one_write(built, tmp_path,
                                                                       monkeypatch):
    root, (table, slices, _) = built
    whole = slices.to_arrow()
    assert whole.num_rows == len(slices) > 100
    assert set(whole["series_uid"].to_pylist()) == set(table["series_uid"].to_list())
    slices.write(tmp_path / "one.parquet")
    pq.write_table(whole, tmp_path / "reference.parquet", compression="zstd")
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "reference.parquet").read_bytes()
    monkeypatch.setattr(slice_table, "ROW_GROUP", 50)
    slices.write(tmp_path / "parts.parquet")
    parts = pq.ParquetFile(tmp_path / "parts.parquet")
    assert parts.metadata.num_row_groups > 2
    assert parts.read().equals(whole)
    headers = slice_table.read(tmp_path / "parts.parquet", root / "raw")
    assert sum(len(h.slices) for h in headers.values()) == whole.num_rows
    slices.close()
