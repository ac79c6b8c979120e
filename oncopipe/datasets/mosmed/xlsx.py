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

from oncopipe.core import limits
from oncopipe.core.errors import LimitError, RejectError, bad_bytes_reject

_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_PKG_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_CELL_REF = re.compile(r"([A-Z]{1,3})([0-9]{1,7})")  # A1 ... XFD1048576: Excel's largest
_ROW_NUMBER = re.compile(r"[0-9]{1,7}")


class XlsxError(RejectError):
    """The file is not a readable workbook; the message names the file."""


def read_first_sheet(path: str | Path) -> list[list[str]]:
    """Rows of the workbook's first sheet, each a list of cell texts ('' for empty cells).

    Hostile workbooks are refused before anything grows with what they declare: each zip
    member's inflated size is checked against ``max_inflated_bytes`` and ``max_table_bytes``
    before it is read (and read no further than that), each cell's row and column against
    ``max_xlsx_row``/``max_xlsx_column`` and the sheet's cells, as the table returned here
    spans them, against ``max_xlsx_cells`` (:mod:`oncopipe.core.limits`). Whatever the zip and
    XML readers raise on bad bytes is an :class:`XlsxError` naming the file.
    """
    path = Path(path)
    with bad_bytes_reject(path, "reading the .xlsx workbook", XlsxError):
        try:
            with zipfile.ZipFile(path) as zf:
                strings = _shared_strings(path, zf)
                sheet = ET.fromstring(_member(path, zf, _first_sheet_name(path, zf)))
        except (zipfile.BadZipFile, KeyError, ET.ParseError) as exc:
            raise XlsxError(f"{path}: not a readable .xlsx workbook ({exc})") from None
        except OSError as exc:
            raise XlsxError(f"{path}: not a readable .xlsx workbook "
                            f"({exc.strerror or exc})") from None
        except LimitError as exc:
            raise XlsxError(str(exc)) from None
        try:
            return _table(path, sheet, strings)
        except LimitError as exc:
            raise XlsxError(str(exc)) from None


def _table(path: Path, sheet: ET.Element, strings: list[str]) -> list[list[str]]:
    lim = limits.active()
    rows: dict[int, dict[int, str]] = {}
    next_row = 1
    cells_read = 0
    for row in sheet.iter(f"{_MAIN}row"):
        r = _row_number(path, row.get("r"), next_row)
        next_row = r + 1
        cells: dict[int, str] = {}
        next_col = 0
        for cell in row.iter(f"{_MAIN}c"):
            ref = cell.get("r")
            col = next_col if ref is None else _column_of(path, ref)
            lim.check("max_xlsx_column", col + 1, f"{path}: cell {ref or col + 1}")
            next_col = col + 1
            cells_read += 1
            lim.check("max_xlsx_cells", cells_read, f"{path}: cells")
            try:
                cells[col] = _value(cell, strings)
            except (IndexError, ValueError, OverflowError) as exc:
                raise XlsxError(f"{path}: cell {ref or '?'} unreadable ({exc})") from None
        rows[r] = cells
    if not rows:
        return []
    # the table spans every row up to the last and each row up to its last cell
    span = max(rows) + sum(max(cells) + 1 for cells in rows.values() if cells)
    lim.check("max_xlsx_cells", span, f"{path}: rows and cells the sheet spans")
    out = []
    for r in range(1, max(rows) + 1):
        cells = rows.get(r, {})
        out.append([cells.get(c, "") for c in range(max(cells) + 1)] if cells else [])
    return out


def _row_number(path: Path, text: str | None, default: int) -> int:
    """The 1-based row number of ``r="..."`` (the next row when absent)."""
    if text is None:
        number = default
    elif _ROW_NUMBER.fullmatch(text) and int(text) >= 1:
        number = int(text)
    else:
        raise XlsxError(f"{path}: row reference {text[:20]!r} is not a row number")
    limits.active().check("max_xlsx_row", number, f"{path}: row")
    return number


def _column_of(path: Path, ref: str) -> int:
    """0-based column of a cell reference such as ``C7``; its row is checked too."""
    match = _CELL_REF.fullmatch(ref)
    if match is None:
        raise XlsxError(f"{path}: cell reference {ref[:20]!r} is not a cell like C7")
    limits.active().check("max_xlsx_row", int(match.group(2)), f"{path}: cell {ref}")
    return _column(match.group(1))


def _member(path: Path, zf: zipfile.ZipFile, name: str) -> bytes:
    """One zip member's bytes, refused before reading if it declares more than the limits
    allow (zipfile stops at the declared size and checks the CRC, so the declaration
    cannot lie)."""
    info = zf.getinfo(name)
    lim = limits.active()
    lim.check("max_inflated_bytes", info.file_size, f"{path}: {name}")
    lim.check("max_table_bytes", info.file_size, f"{path}: {name}")
    return zf.read(info)


def _first_sheet_name(path: Path, zf: zipfile.ZipFile) -> str:
    """Member name of the first sheet in workbook order (not necessarily ``sheet1.xml``)."""
    workbook = ET.fromstring(_member(path, zf, "xl/workbook.xml"))
    first = workbook.find(f"{_MAIN}sheets/{_MAIN}sheet")
    if first is None:
        raise KeyError("the workbook lists no sheet")
    rel_id = first.get(f"{_REL}id")
    rels = ET.fromstring(_member(path, zf, "xl/_rels/workbook.xml.rels"))
    for rel in rels.iter(f"{_PKG_REL}Relationship"):
        if rel.get("Id") == rel_id:
            target = rel.get("Target", "")
            if target.startswith("/"):
                return target.lstrip("/")
            return str(PurePosixPath("xl") / target)
    raise KeyError(f"sheet relationship {rel_id} not found")


def _shared_strings(path: Path, zf: zipfile.ZipFile) -> list[str]:
    try:
        table = ET.fromstring(_member(path, zf, "xl/sharedStrings.xml"))
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
        index = int(text)
        if not 0 <= index < len(strings):  # a negative index would pick from the end
            raise IndexError(f"shared string {index} of {len(strings)}")
        return strings[index]
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
