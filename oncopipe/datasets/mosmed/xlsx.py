"""The first worksheet of an ``.xlsx`` file as rows of text, with the standard library only.

MosMedData ships its registry as ``dataset_registry.xlsx`` beside (in some copies instead of)
the CSV. Reading four text columns of one sheet needs a small part of SpreadsheetML: the
workbook's first sheet, its rows and cells placed by reference (``C7``: empty cells are not
written, so positions come from the reference, not the order), shared strings (rich-text runs
joined), inline strings and numbers. That is done here with ``zipfile`` and
``xml.etree.ElementTree`` rather than adding openpyxl and its dependency for one table;
formulas are read as their cached values, dates as their serial numbers (the registry has
neither).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path, PurePosixPath

from oncopipe.errors import RejectError

_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_PKG_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_CELL_REF = re.compile(r"^([A-Z]+)(\d+)$")


class XlsxError(RejectError):
    """The file is not a readable workbook; the message names the file."""


def read_first_sheet(path: str | Path) -> list[list[str]]:
    """Rows of the workbook's first sheet, each a list of cell texts ('' for empty cells)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            strings = _shared_strings(zf)
            sheet = ET.fromstring(zf.read(_first_sheet_name(zf)))
    except (zipfile.BadZipFile, KeyError, ET.ParseError, OSError) as exc:
        raise XlsxError(f"{path}: not a readable .xlsx workbook ({exc})") from None
    rows: dict[int, dict[int, str]] = {}
    next_row = 1
    for row in sheet.iter(f"{_MAIN}row"):
        r = int(row.get("r", next_row))
        next_row = r + 1
        cells: dict[int, str] = {}
        next_col = 0
        for cell in row.iter(f"{_MAIN}c"):
            ref = _CELL_REF.match(cell.get("r", ""))
            col = _column(ref.group(1)) if ref else next_col
            next_col = col + 1
            try:
                cells[col] = _value(cell, strings)
            except (IndexError, ValueError) as exc:
                raise XlsxError(f"{path}: cell {cell.get('r', '?')} unreadable ({exc})") from None
        rows[r] = cells
    if not rows:
        return []
    out = []
    for r in range(1, max(rows) + 1):
        cells = rows.get(r, {})
        out.append([cells.get(c, "") for c in range(max(cells) + 1)] if cells else [])
    return out


def _first_sheet_name(zf: zipfile.ZipFile) -> str:
    """Member name of the first sheet in workbook order (not necessarily ``sheet1.xml``)."""
    workbook = ET.fromstring(zf.read("xl/workbook.xml"))
    first = workbook.find(f"{_MAIN}sheets/{_MAIN}sheet")
    if first is None:
        raise KeyError("the workbook lists no sheet")
    rel_id = first.get(f"{_REL}id")
    rels = ET.fromstring(zf.read("xl/_rels/workbook.xml.rels"))
    for rel in rels.iter(f"{_PKG_REL}Relationship"):
        if rel.get("Id") == rel_id:
            target = rel.get("Target", "")
            if target.startswith("/"):
                return target.lstrip("/")
            return str(PurePosixPath("xl") / target)
    raise KeyError(f"sheet relationship {rel_id} not found")


def _shared_strings(zf: zipfile.ZipFile) -> list[str]:
    try:
        table = ET.fromstring(zf.read("xl/sharedStrings.xml"))
    except KeyError:  # a workbook without any text cell has none
        return []
    return ["".join(t.text or "" for t in si.iter(f"{_MAIN}t"))
            for si in table.iter(f"{_MAIN}si")]


def _value(cell: ET.Element, strings: list[str]) -> str:
    kind = cell.get("t", "n")
    if kind == "inlineStr":
        return "".join(t.text or "" for t in cell.iter(f"{_MAIN}t"))
    v = cell.find(f"{_MAIN}v")
    text = v.text or "" if v is not None else ""
    if kind == "s":
        return strings[int(text)]
    if kind == "n" and text:
        number = float(text)
        return str(int(number)) if number.is_integer() else text
    return text  # "str" (formula result), "b" (0/1), "e" (error text)


def _column(letters: str) -> int:
    """0-based column index of ``A``, ``B``, ..., ``AA``."""
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - ord("A") + 1
    return n - 1
