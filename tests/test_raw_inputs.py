"""The shared raw-input readers: the walker, strict UTF-8 CSVs, the .xlsx sheet reader, and
corrupt-JPEG detection (libjpeg's warning becomes a rejection naming the file)."""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from oncopipe.datasets.mosmed import xlsx
from oncopipe.imagefiles.imagedump import Decode, decode_batch, load_image
from oncopipe.imagefiles.images import ImageError
from oncopipe.ingest.parallel import ordered_map
from oncopipe.ingest.rawfiles import RawLayoutError, read_csv, walk, walk_folders
from oncopipe.ingest.report import Report

XLSX = Path(__file__).parent / "data" / "mosmed_registry.xlsx"  # written by openpyxl 3.1.5


# ------------------------------------------------------------------------------- walker


def test_walker_lists_files_in_path_order_and_records_what_it_cannot_follow(tmp_path):
    raw = tmp_path / "raw"
    for rel in ("b/2.txt", "b/10.txt", "a/z/1.txt", "a.txt", ".hidden"):
        (raw / rel).parent.mkdir(parents=True, exist_ok=True)
        (raw / rel).write_text(rel)
    outside = tmp_path / "store"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep" / "x.txt").write_text("x")
    (raw / "linked").symlink_to(outside, target_is_directory=True)  # followed
    (raw / "a" / "up").symlink_to(raw, target_is_directory=True)  # a loop
    (raw / "b" / "self").symlink_to("self")  # resolves to itself
    (raw / "b" / "gone.txt").symlink_to(tmp_path / "missing.txt")
    os.mkfifo(raw / "fifo")
    report = Report("test")
    tree = walk(raw, report)
    assert [tree.rel(p) for p in tree.files] == [
        ".hidden", "a/z/1.txt", "a.txt", "b/10.txt", "b/2.txt", "linked/deep/x.txt"]
    assert [(tree.rel(p), why.split(":")[0]) for p, why in tree.problems] == [
        ("a/up", "symlink loop"), ("b/gone.txt", "broken symlink"), ("b/self", "symlink loop"),
        ("fifo", "not a regular file")]
    assert dict((tree.rel(p), why) for p, why in tree.problems)["a/up"] == \
        "symlink loop: links back to the raw root"
    assert report.n_read == 10 and report.n_kept == 0 and len(report.rejects) == 4
    assert {p for p, _ in report.rejects} == {"a/up", "b/gone.txt", "b/self", "fifo"}


def test_walking_folder_by_folder_lists_and_counts_what_the_whole_walk_does(tmp_path):
    raw = tmp_path / "raw"
    for name in ("a/z/1.txt", "a.txt", "b/10.txt", "b/2.txt"):
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        (raw / name).write_text("x")
    (raw / "b" / "gone.txt").symlink_to(raw / "nowhere")
    whole, by_folder = Report("whole"), Report("by folder")
    tree = walk(raw, whole)
    folders = list(walk_folders(raw, by_folder))
    assert [f for f, _ in folders] == [raw, raw / "a", raw / "a" / "z", raw / "b"]
    assert sorted(p for _, files in folders for p in files) == sorted(tree.files)
    assert [p.name for p in folders[3][1]] == ["10.txt", "2.txt"]  # by name, in a folder
    assert (by_folder.n_read, sorted(by_folder.rejects)) == (whole.n_read, sorted(whole.rejects))
    assert next(walk_folders(raw / "b"))[1] == [raw / "b" / "10.txt", raw / "b" / "2.txt"]


def test_walker_names_paths_from_the_raw_root_and_refuses_a_missing_folder(tmp_path):
    (tmp_path / "train" / "sub").mkdir(parents=True)
    (tmp_path / "train" / "sub" / "back").symlink_to(tmp_path / "train")
    tree = walk(tmp_path / "train", base=tmp_path)
    assert tree.problems == [(tmp_path / "train" / "sub" / "back",
                              "symlink loop: links back to train")]
    with pytest.raises(RawLayoutError, match=r"nothing: PCam folder not found"):
        walk(tmp_path / "nothing", what="PCam")


# ------------------------------------------------------------------------------ CSV text


def test_csv_must_be_utf8_and_the_error_says_where_and_how_to_fix(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes("\ufeffid,label\nabc,1\n".encode())
    assert read_csv(path) == [["id", "label"], ["abc", "1"]]  # BOM dropped
    path.write_bytes("id,label\nabc,1\ncaf\u00e9,0\n".encode("cp1252"))
    with pytest.raises(RawLayoutError) as info:
        read_csv(path)
    assert str(info.value) == (f"{path}: not UTF-8 text (byte 0xe9 at line 3, column 4); "
                               "re-save it as UTF-8, e.g. iconv -f cp1252 -t utf-8")


# ------------------------------------------------------------------------------ xlsx


def test_xlsx_written_by_openpyxl_reads_as_the_csv_it_was_made_from():
    rows = xlsx.read_first_sheet(XLSX)  # the workbook's second sheet ("notes") is not read
    assert rows[0] == ["study_id", "category", "study_file", "mask_file"]
    assert rows[1] == ["1", "CT-0", "/studies/CT-0/study_0001.nii.gz"]  # empty cell not written
    assert rows[5] == ["255", "CT-1", "/studies/CT-1/study_0255.nii.gz",
                       "/masks/study_0255_mask.nii.gz"]
    assert len(rows) == 12


def _workbook(path: Path, sheet_xml: str, shared: str | None) -> None:
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("xl/workbook.xml", f'<workbook xmlns="{main}" xmlns:r="{rel}"><sheets>'
                    '<sheet name="Registry" sheetId="7" r:id="rId3"/></sheets></workbook>')
        zf.writestr("xl/_rels/workbook.xml.rels",
                    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
                    'relationships"><Relationship Id="rId3" Target="worksheets/data.xml" '
                    'Type="x"/></Relationships>')
        zf.writestr("xl/worksheets/data.xml",
                    f'<worksheet xmlns="{main}"><sheetData>{sheet_xml}</sheetData></worksheet>')
        if shared is not None:
            zf.writestr("xl/sharedStrings.xml", f'<sst xmlns="{main}">{shared}</sst>')


def test_xlsx_as_excel_writes_it_shared_strings_rich_text_gaps_and_numbers(tmp_path):
    """Excel's own habits: shared strings (one split in rich-text runs), cells placed by
    reference with gaps, an empty row skipped, numbers as floats, a sheet not named sheet1."""
    path = tmp_path / "registry.xlsx"
    shared = ('<si><t>study_id</t></si><si><t>category</t></si><si><t>study_file</t></si>'
              '<si><r><t>/studies/CT-2/</t></r><r><t>study_0939.nii.gz</t></r></si>')
    sheet = ('<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c>'
             '<c r="C1" t="s"><v>2</v></c></row>'
             '<row r="3"><c r="A3"><v>939.0</v></c><c r="C3" t="s"><v>3</v></c></row>'
             '<row r="4"><c r="A4"><v>2.5</v></c><c r="B4" t="inlineStr"><is><t>CT-2</t></is>'
             '</c></row>')
    _workbook(path, sheet, shared)
    assert xlsx.read_first_sheet(path) == [
        ["study_id", "category", "study_file"], [],
        ["939", "", "/studies/CT-2/study_0939.nii.gz"], ["2.5", "CT-2"]]
    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(b"study_id,category\n")  # a CSV renamed .xlsx
    with pytest.raises(xlsx.XlsxError, match=r"bad\.xlsx: not a readable \.xlsx workbook"):
        xlsx.read_first_sheet(bad)


# ------------------------------------------------------------------------- corrupt JPEG


@pytest.fixture()
def corrupt_jpeg(tmp_path) -> Path:
    """A real JPEG with 4 KiB of garbage in its scan data and its end marker intact."""
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (600, 800, 3), dtype=np.uint8), (9, 9), 3)
    _, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    data = bytearray(buf.tobytes())
    start = data.index(b"\xff\xda")
    middle = start + (len(data) - start) // 3
    data[middle:middle + 4096] = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path = tmp_path / "ISIC_0000001.jpg"
    path.write_bytes(bytes(data))
    assert cv2.imread(str(path)) is not None  # OpenCV alone would keep it
    return path


def test_corrupt_jpeg_is_rejected_with_its_name_and_nothing_on_stderr(corrupt_jpeg, capfd):
    capfd.readouterr()
    decode = Decode(size=(64, 64))
    with pytest.raises(ImageError) as info:
        load_image(corrupt_jpeg, decode)
    assert str(info.value) == ("corrupt: ISIC_0000001.jpg: Corrupt JPEG data: premature end "
                               "of data segment")
    assert capfd.readouterr().err == ""  # libjpeg's nameless warning did not leak
    good = corrupt_jpeg.with_name("good.jpg")
    cv2.imwrite(str(good), np.full((100, 100, 3), 128, np.uint8))
    assert load_image(good, decode).shape == (3, 64, 64)  # the capture leaves good files be
    print("stderr still works", file=sys.stderr)
    assert capfd.readouterr().err == "stderr still works\n"


def test_corrupt_jpeg_is_rejected_in_worker_processes_too(corrupt_jpeg, capfd):
    """Batches of files share one capture: each file gets only the messages its own decode
    printed, so a good file after a corrupt one in the same batch is kept."""
    good = corrupt_jpeg.with_name("good.jpg")
    cv2.imwrite(str(good), np.full((100, 100, 3), 128, np.uint8))
    capfd.readouterr()
    batch = [str(corrupt_jpeg), str(good), str(corrupt_jpeg), str(good)]
    jobs = [(batch, Decode(size=(32, 32)))] * 3
    results = [r for rs in ordered_map(decode_batch, jobs, workers=2) for r in rs]
    assert [r[0] is None for r in results] == [True, False, True, False] * 3
    assert {r[1].split(":")[0] for r in results if r[0] is None} == {"corrupt"}
    assert "Corrupt JPEG" not in capfd.readouterr().err
