"""oncopipe.core.perf: a decorated stage main writes metrics/<ds>/perf/<stage>.json on success
only."""

from __future__ import annotations

import json
import time

import pytest

from oncopipe.core import perf


def test_success_writes_throughput_and_memory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)

    @perf.measured("shard")
    def main(argv=None):
        perf.items(50, "samples")
        time.sleep(0.05)
        return "done"

    assert main(["pcam"]) == "done"
    got = json.loads((tmp_path / "metrics" / "pcam" / "perf" / "shard.json").read_text())
    assert got["stage"] == "shard" and got["items"] == 50 and got["unit"] == "samples"
    assert got["items_per_s"] == pytest.approx(50 / got["seconds"], rel=0.05)
    assert got["peak_rss_mb"] > 10 and got["cpu_seconds"] >= 0


def test_failure_other_rank_and_fixed_dataset(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)

    @perf.measured("train")
    def failing(argv=None):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        failing(["pcam"])
    assert not (tmp_path / "metrics").exists()

    @perf.measured("lidc_lesions", "lidc")
    def no_args(argv=None):
        return None

    monkeypatch.setenv("RANK", "1")
    no_args([])
    assert not (tmp_path / "metrics").exists()  # only rank 0 writes
    monkeypatch.setenv("RANK", "0")
    no_args([])
    got = json.loads((tmp_path / "metrics/lidc/perf/lidc_lesions.json").read_text())
    assert "items" not in got and got["stage"] == "lidc_lesions"  # nothing counted: no rate
