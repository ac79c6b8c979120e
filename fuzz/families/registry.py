"""MosMed's registry, as ``dataset_registry.csv`` or ``dataset_registry.xlsx``, through
:func:`~oncopipe.datasets.mosmed.registry.find_studies` as the prepare stage calls it.

Seeds: the demo's CSV (UTF-8 with a BOM, as the release writes it) and a small workbook
written by openpyxl (tests/data/mosmed_registry.xlsx). The structure-aware mutator edits the
CSV's text (a column named twice, stray quotes, bytes that are not UTF-8, a huge field) or
the workbook's XML inside the zip (cell and row references, shared-string indices, cell
types) and zips it again, sometimes with another compression method or a member cut short.
The input goes into an otherwise empty raw folder under the name its first bytes call for.
"""

from __future__ import annotations

import io
import random
import re
import shutil
import zipfile
from pathlib import Path

from fuzz.harness import Family
from oncopipe.datasets.mosmed.registry import REGISTRY_FILE, REGISTRY_XLSX, find_studies
from oncopipe.ingest.report import Report

XLSX = Path(__file__).resolve().parents[2] / "tests" / "data" / "mosmed_registry.xlsx"
_REFS = ("ZZZZZZ1", "XFD1", "XFE1", "A1048576", "A1048577", "A0", "a1", "1A", "A-1", "A99999999",
         "A\u0661", "", "AAAA1", "A1.5")
_ROWS = ("99999999", "1048576", "1048577", "0", "-1", "x", "1e3", "\u0661", "", "2.0")
_VALUES = ("-1", "0", "999999", "1e309", "nan", "inf", "x", "", "1" * 400, "-0")
_TYPES = ("s", "n", "str", "b", "e", "inlineStr", "d", "zz")


def seeds() -> list[bytes]:
    rows = ["study_id,category,study_file,mask_file",
            "1,CT-0,/studies/CT-0/study_0001.nii.gz,",
            "255,CT-1,/studies/CT-1/study_0255.nii.gz,/masks/study_0255_mask.nii.gz",
            "939,CT-2,/studies/CT-2/study_0939.nii.gz,"]
    text = "\n".join(rows) + "\n"
    return [text.encode("utf-8-sig"), text.replace("\n", "\r\n").encode(), XLSX.read_bytes()]


def _mutate_csv(data: bytes, rng: random.Random) -> bytes:
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")
    op = rng.randrange(7)
    k = rng.randrange(len(lines))
    if op == 0:  # a column named twice
        names = lines[0].split(",")
        names.insert(rng.randrange(len(names) + 1), rng.choice(names))
        lines[0] = ",".join(names)
    elif op == 1:
        lines[k] = lines[k] + rng.choice(['"', '""', ',"a', '\r', '\x00', ',,,,,'])
    elif op == 2:
        return data[:3] + bytes([rng.choice((0x80, 0xC3, 0xE9, 0xFF))]) + data[3:]
    elif op == 3:
        lines[k] = lines[k] + "," + "x" * rng.choice((1000, 200_000))
    elif op == 4:
        lines.insert(k, lines[k])
    elif op == 5:
        lines[k] = ",".join(reversed(lines[k].split(",")))
    else:
        lines[k] = "\ufeff" + lines[k]
    return "\n".join(lines).encode("utf-8")


def _mutate_xml(xml: str, rng: random.Random) -> str:
    op = rng.randrange(5)
    if op == 0:
        return re.sub(r' r="[A-Z]+[0-9]+"', lambda m: f' r="{rng.choice(_REFS)}"'
                      if rng.random() < 0.3 else m.group(0), xml)
    if op == 1:
        return re.sub(r'<row r="[0-9]+"', lambda m: f'<row r="{rng.choice(_ROWS)}"'
                      if rng.random() < 0.3 else m.group(0), xml)
    if op == 2:
        return re.sub(r"<v>[^<]*</v>", lambda m: f"<v>{rng.choice(_VALUES)}</v>"
                      if rng.random() < 0.3 else m.group(0), xml)
    if op == 3:
        return re.sub(r' t="[a-zA-Z]+"', lambda m: f' t="{rng.choice(_TYPES)}"'
                      if rng.random() < 0.3 else m.group(0), xml)
    cut = rng.randrange(len(xml) + 1)
    return xml[:cut] + rng.choice(("<", "&", "&lol;", "<!DOCTYPE x>", "</row>", "\x00")) + \
        xml[cut:]


def _mutate_xlsx(data: bytes, rng: random.Random) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = [(info.filename, zf.read(info)) for info in zf.infolist()]
    except Exception:
        return data
    out = io.BytesIO()
    method = rng.choice((zipfile.ZIP_DEFLATED, zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED,
                         zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA))
    with zipfile.ZipFile(out, "w", method) as zf:
        for name, body in members:
            if name.endswith(".xml") and rng.random() < 0.5:
                body = _mutate_xml(body.decode("utf-8", "replace"), rng).encode("utf-8")
            if rng.random() < 0.03:
                continue  # a part missing
            zf.writestr(name, body)
    blob = bytearray(out.getvalue())
    if rng.random() < 0.1:  # a compression method no reader knows, in one local header
        at = blob.find(b"PK\x03\x04")
        blob[at + 8:at + 10] = rng.choice((99, 7, 0xFFFF)).to_bytes(2, "little")
    return bytes(blob)


def mutate(data: bytes, rng: random.Random) -> bytes:
    return _mutate_xlsx(data, rng) if data[:2] == b"PK" else _mutate_csv(data, rng)


def target(path: Path) -> object:
    """Find the studies of a raw folder that holds only this registry, as prepare does."""
    raw = path.parent / "raw"
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir()
    name = REGISTRY_XLSX if path.read_bytes()[:2] == b"PK" else REGISTRY_FILE
    shutil.copyfile(path, raw / name)
    report = Report("prepare[mosmed]")
    studies = find_studies(raw, report)
    report.check_accounting()
    return studies


FAMILY = Family("registry", ".registry", seeds, target, mutate)
