"""Small shared utilities: atomic writes, the reject report, the ordered parallel map."""

import json
import os

import polars as pl
import pytest

from oncopipe.core.atomic import atomic_path, write_text
from oncopipe.ingest.parallel import ordered_map
from oncopipe.ingest.report import Report


def test_atomic_path_replaces_directory_only_on_success(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("half")
        raise RuntimeError
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert (out / "old.txt").read_text() == "old"
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert sorted(os.listdir(out)) == ["new.txt"]


def test_write_text(tmp_path):
    write_text(tmp_path / "a" / "b.txt", "hello")
    assert (tmp_path / "a" / "b.txt").read_text() == "hello"


def test_report_accounts_for_everything(tmp_path):
    report = Report("toy")
    report.read(3)
    report.keep(1)
    report.reject("raw/b.png", "unreadable: truncated file")
    report.reject("raw/a.png", "unknown label: 7")
    summary = report.write(tmp_path)
    rejects = pl.read_parquet(tmp_path / "rejects.parquet")
    assert rejects["path"].to_list() == ["raw/a.png", "raw/b.png"]  # sorted, deterministic
    assert set(rejects.columns) == {"path", "reason", "stage"}
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk == summary
    assert on_disk["read"] == on_disk["kept"] + on_disk["rejected"] == 3
    assert on_disk["rejected_by_reason"] == {"unknown label": 1, "unreadable": 1}


def _square(x: int) -> int:
    return x * x


def test_ordered_map_keeps_order_with_workers():
    items = list(range(40))
    assert list(ordered_map(_square, items, workers=2)) == [x * x for x in items]
    assert list(ordered_map(_square, items, workers=0)) == [x * x for x in items]


def test_ordered_map_logs_progress_when_not_a_terminal(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="oncopipe.ingest.parallel"):
        assert list(ordered_map(_square, [1, 2, 3], desc="squares")) == [1, 4, 9]
    assert "squares: 3 items" in caplog.text  # pytest's stderr is captured, not a terminal
