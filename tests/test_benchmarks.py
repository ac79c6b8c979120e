"""`python -m benchmarks --quick` on tiny inputs: every module runs, every table is generated
into the docs and every method's output agrees with ours; `benchmarks/serve_latency.py` serves
every dataset (no timing assertions: speed is not tested here). Needs the `bench` extra, which
CI installs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("monai")
pytest.importorskip("torchio")
pytest.importorskip("scipy")

from benchmarks import __main__ as bench
from benchmarks import harness, serve_latency, training_throughput

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("decode-pcam", "decode-isic", "decode-isic-500", "decode-breakhis", "shard-epoch",
        "shard-random", "mosmed-noise0", "mosmed-noise15", "train-step-2d", "train-step-3d")
RECORD_KEYS = ("lidc_read", "lidc_memory", "shard_write", "scaling")


def block(text: str, key: str) -> str:
    start, end = harness.markers(key)
    return text[text.index(start) + len(start):text.index(end)].strip()


def test_quick_run_writes_every_table_and_all_outputs_agree(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    shutil.copy(ROOT / "docs" / "benchmarks.md", doc)
    before = doc.read_text()
    assert bench.main(["--quick", "--doc", str(doc)]) == 0  # 1 = some output disagreed
    text = doc.read_text()
    for key in KEYS:
        table = block(text, key)
        rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
        assert len(rows) >= 2, f"{key}: no table generated"
        assert "DIFFERS" not in table
        assert re.search(r"load average [\d.]+ before, [\d.]+ after", table)
    checked = [line for key in KEYS for line in block(text, key).splitlines() if "agrees:" in line]
    assert len(checked) >= 15  # every alternative (not floors / step parts) was checked
    for key in RECORD_KEYS:  # the modules with their own interleaving, at tiny sizes
        table = block(text, key)
        assert "DIFFER" not in table
        assert len([line for line in table.splitlines() if line.startswith("| ")]) >= 4
    assert "identical bytes" in block(text, "shard_write")
    assert "2D crops identical" in block(text, "lidc_read")
    assert "same crops as a new series" in block(text, "lidc_read")
    assert block(text, "scaling").count("| identical |") == 6  # 2 stages x 3 ways to run
    for line in text.splitlines():  # a "|" inside a generated cell is escaped
        if line.startswith("| ") and "d HU" in line:
            assert "\\|d HU\\|" in line
    assert "monai 1." in block(text, "environment")
    # only the generated blocks changed: the prose between them is as it was
    strip = lambda t: re.sub(r"(<!-- bench:\S+ start -->).*?(<!-- bench:)", r"\1\2", t,  # noqa: E731
                             flags=re.S)
    assert strip(text) == strip(before)


def test_write_block_refuses_a_doc_without_markers(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="no '<!-- bench:decode-pcam start -->'"):
        harness.write_block(doc, "decode-pcam", "table")
    assert doc.read_text() == "no markers here\n"


def test_disagreement_is_reported() -> None:
    cmp = harness.Comparison("k", "t", "item", 1, [
        harness.Method("ours", lambda: [1.0, 2.0]),
        harness.Method("off", lambda: [1.0, 2.5], harness.same_array(max_abs=0.1)),
        harness.Method("floor", lambda: None),
    ])
    result = harness.run(cmp, 2)
    assert not result.agreed
    assert [len(r.times) for r in result.rows] == [2, 2, 2]
    assert "DIFFERS: max 0.5" in harness.table(result)


def test_gpu_readiness_script_runs_on_cpu(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    shutil.copy(ROOT / "docs" / "benchmarks.md", doc)
    assert training_throughput.main(["--quick", "--steps", "2", "--write", "--doc",
                                     str(doc)]) == 0
    table = block(doc.read_text(), "training-gpu")
    assert "ResNet-50" in table and "3D CNN" in table
    assert "(no GPU)" in table and "samples/s" in table


def test_serve_latency_script_serves_every_dataset(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    doc = tmp_path / "serve.md"
    shutil.copy(ROOT / "docs" / "serve.md", doc)
    serve_latency.main(["--repeats", "1", "--write", str(doc)])
    start, end = serve_latency.MARK_BEGIN, serve_latency.MARK_END
    text = doc.read_text()
    table = text[text.index(start) + len(start):text.index(end)]
    rows = [line.split(" | ")[0].strip("| ") for line in table.splitlines()
            if line.startswith("| ") and " ms |" in line]
    assert rows == ["lidc", "mosmed", "pcam", "isic", "breakhis"]
    assert "--repeats 1`" in table
