"""`python -m benchmarks --quick` on tiny inputs: every module runs, every table is generated
into the docs and every method's output agrees with ours; `serve_latency` serves every dataset,
one request at a time and to 8 clients at once (no timing assertions: speed is not tested
here). Needs the `bench` extra, which CI installs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("monai")
pytest.importorskip("torchio")
pytest.importorskip("scipy")

from benchmarks import __main__ as bench
from benchmarks import harness, training_throughput

pytestmark = pytest.mark.process  # minutes: not in the default run, .ci/run runs it

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("decode-pcam", "decode-isic-480x640", "decode-isic-768x1024", "decode-isic-1053x1872",
        "decode-isic-2448x3264", "decode-isic-4000x6000", "decode-breakhis", "shard-epoch",
        "shard-random", "mosmed-noise0", "mosmed-noise15", "train-step-2d", "train-step-3d")
RECORD_KEYS = ("lidc_read", "lidc_memory", "shard_write", "scaling", "serve_latency",
               "loader_feed")


def block(text: str, key: str) -> str:
    start, end = harness.markers(key)
    return text[text.index(start) + len(start):text.index(end)].strip()


def test_quick_run_writes_every_table_and_all_outputs_agree(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    shutil.copy(ROOT / "docs" / "benchmarks.md", doc)
    shutil.copy(ROOT / "docs" / "serve.md", tmp_path / "serve.md")  # the per-dataset table
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
    serve = block(text, "serve_latency")  # 8 clients x 2 requests, every one answered
    assert re.search(r"\| all \| 16 \| 16 \| 0 \| [\d,]+ ms \| [\d,]+ ms \|", serve), serve
    assert "| CT (MosMed volume, LIDC series) |" in serve and "per request" in serve
    one_by_one = block((tmp_path / "serve.md").read_text(), "serve_latency")
    assert [line.split(" | ")[0].strip("| ") for line in one_by_one.splitlines()
            if line.endswith(" ms |")] == ["lidc", "mosmed", "pcam", "isic", "breakhis"]
    feed = block(text, "loader_feed")
    for dataset in ("lidc", "pcam", "isic", "breakhis", "mosmed"):
        assert f"| {dataset} |" in feed
    for key in KEYS[:7]:  # every decode table: ours, OpenCV, PIL; the JPEG-only peers for ISIC
        rows = block(text, key)
        assert "oncopipe (`imagedump.decode_batch`" in rows and "OpenCV `imread`" in rows
        if "isic" in key:  # a row, or the note saying why there is none
            assert "simplejpeg" in rows and "PyTurboJPEG" in rows
        else:
            assert "| simplejpeg" not in rows and "| PyTurboJPEG" not in rows
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
