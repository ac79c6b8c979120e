"""The header pass of a plain CT slice straight from its bytes, without pydicom's Dataset.

``predict`` and ``serve`` parse every header of a series they have not seen before, on the
request's clock: through pydicom, the parse and the conversion of the ~25 values the checks
use cost several times reading the whole series' bytes (docs/benchmarks.md, per-input path).
Nearly every LIDC-IDRI file is the same simple case: a preamble, an explicit-VR file meta
group, an uncompressed little-endian dataset whose elements come in tag order, then the Pixel
Data. :func:`scan` walks exactly that case with ``struct`` and converts the wanted values the
way pydicom does for it (a DS to a float, an IS or US to an int, text with its padding
stripped). Anything else, however legal or common it may be (a value pydicom would convert
differently: empty, several where one is expected, non-ASCII text, a DS or IS that is not a
plain number; a structure pydicom reads leniently: elements out of order, a malformed
sequence, a length past the bytes; another transfer syntax; a character set other than the
ASCII-compatible defaults), gives None, and the caller parses the file with pydicom, which
decides and words the reject. So what this accepts, pydicom accepts with the same values
(``tests/test_lidc_header_scan.py`` compares both on generated, mutated and pydicom's own
test files).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import DicomDictionary, dictionary_VM, dictionary_VR
from pydicom.filereader import ENCODED_VR
from pydicom.tag import BaseTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

_EXPLICIT = struct.Struct("<HH2sH")
_IMPLICIT = struct.Struct("<HHI")
_U32 = struct.Struct("<I")
_US = struct.Struct("<H")
_SS = struct.Struct("<h")
_LONG = frozenset(str(vr).encode() for vr in EXPLICIT_VR_LENGTH_32)
# An explicit-VR element's header: 12 bytes with a 4-byte length, 8 with a 2-byte one.
_HEADER_SIZE = {vr: 12 if vr in _LONG else 8 for vr in ENCODED_VR if len(vr) == 2}
_SYNTAXES = {b"1.2.840.10008.1.2": True, b"1.2.840.10008.1.2.1": False}  # -> implicit VR
_META = {tag: entry[0].encode() for tag, entry in DicomDictionary.items()
         if tag >> 16 == 2 and entry[0] in ("UL", "OB", "UI", "SH", "AE", "UR")}
_CHARSET = 0x00080005
_CHARSETS = frozenset((b"", b"ISO_IR 6", b"ISO_IR 100", b"ISO_IR 192"))  # ASCII reads alike
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_STOPS = 0x7FE00008  # pydicom stops before (7FE0,0008), (7FE0,0009) and (7FE0,0010)
_PIXEL_DATA = 0x7FE00010
_MAX_DEPTH = 8  # sequences nested deeper: pydicom's business
_UNDEFINED = 0xFFFFFFFF
_TEXT = re.compile(rb"[ -\[\]-~]*\Z")  # printable ASCII without the value separator
_DS = re.compile(rb" *[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)? *\Z")
_IS = re.compile(rb" *[+-]?\d+ *\Z")
_IS_RANGE = 2 ** 31


class _Declined(Exception):
    """The bytes are not the simple case: pydicom reads them."""


@dataclass(frozen=True, slots=True)
class Wanted:
    """How to convert one wanted element: its keyword, dictionary VR and fixed multiplicity."""

    keyword: str
    vr: bytes
    count: int


def wanted(tags: Mapping[BaseTag, str]) -> dict[int, Wanted]:
    """What :func:`scan` needs to know of ``tags`` (tag -> keyword, from ``layout``)."""
    table = {}
    for tag, keyword in tags.items():
        vm = dictionary_VM(tag)
        table[int(tag)] = Wanted(keyword, dictionary_VR(tag).encode(),
                                 int(vm) if vm.isdigit() else 0)
    return table


def scan(data: bytes, want: Mapping[int, Wanted]
         ) -> tuple[dict[str, Any], int, bool] | None:
    """The values of ``want``'s tags found in ``data`` (a file's first bytes) by keyword, with
    ``TransferSyntaxUID``; the offset of the Pixel Data element; and whether the dataset is
    implicit VR. None: not the simple case (see the module's docstring), or the Pixel Data
    element does not start within ``data``.
    """
    try:
        return _scan(data, want)
    except (_Declined, struct.error, IndexError):
        return None


def _scan(data: bytes, want: Mapping[int, Wanted]) -> tuple[dict[str, Any], int, bool]:
    size = len(data)
    if size < 132 or data[128:132] != b"DICM":
        raise _Declined
    pos, syntax = 132, None
    while True:  # the file meta group: explicit VR little endian, known elements only
        group, elem, vr, length = _EXPLICIT.unpack_from(data, pos)
        if group != 2:
            break
        tag = 0x20000 | elem
        if _META.get(tag) != vr:
            raise _Declined
        if _HEADER_SIZE[vr] == 12:
            length = _U32.unpack_from(data, pos + 8)[0]
        pos += _HEADER_SIZE[vr]
        if length == _UNDEFINED or pos + length > size or (vr == b"UL" and length != 4):
            raise _Declined
        if tag == 0x00020010:
            syntax = data[pos:pos + length].rstrip(b"\0 ")
        pos += length
    implicit = _SYNTAXES.get(syntax or b"")
    if implicit is None or syntax is None or group <= 2:
        raise _Declined
    if _looks_implicit(data, pos) != implicit:  # pydicom would switch: its business
        raise _Declined
    values: dict[str, Any] = {"TransferSyntaxUID": syntax.decode()}
    raw: dict[int, tuple[bytes, bytes]] = {}
    keep = {*want, _CHARSET}
    previous = 0x0002FFFF
    explicit, header_size, u32 = _EXPLICIT.unpack_from, _HEADER_SIZE.get, _U32.unpack_from
    while True:  # the hot loop (~200 elements a file): _element inlined
        start = pos
        if implicit:
            group, elem, length = _IMPLICIT.unpack_from(data, pos)
            vr = b""
            pos += 8
        else:
            group, elem, vr, length = explicit(data, pos)
            step = header_size(vr)
            if step is None:
                raise _Declined
            if step == 12:
                length = u32(data, pos + 8)[0]
            pos += step
        tag = group << 16 | elem
        if tag <= previous:
            raise _Declined
        if tag >= _PIXEL_STOPS:
            if tag != _PIXEL_DATA:
                raise _Declined
            values.update(_convert(raw, want))
            return values, start, implicit
        previous = tag
        if length == _UNDEFINED:
            if tag in want or not _is_sequence(data, pos, tag, vr, implicit):
                raise _Declined
            pos = _skip_items(data, pos, implicit, 1)
            continue
        end = pos + length
        if end > size:
            raise _Declined
        if tag in keep:
            raw[tag] = (vr, data[pos:end])
        pos = end


def _element(data: bytes, pos: int, implicit: bool) -> tuple[int, bytes, int, int]:
    """(tag, VR (b"" when implicit), length, where the value starts) of the element at
    ``pos``."""
    if implicit:
        group, elem, length = _IMPLICIT.unpack_from(data, pos)
        return group << 16 | elem, b"", length, pos + 8
    group, elem, vr, length = _EXPLICIT.unpack_from(data, pos)
    step = _HEADER_SIZE.get(vr)
    if step is None:
        raise _Declined
    if step == 12:
        length = _U32.unpack_from(data, pos + 8)[0]
    return group << 16 | elem, vr, length, pos + step


def _looks_implicit(data: bytes, pos: int) -> bool:
    """pydicom's test of the first element: a VR is two upper-case letters."""
    a, b = data[pos + 4], data[pos + 5]
    return not (0x40 < a < 0x5B and 0x40 < b < 0x5B)


def _is_sequence(data: bytes, pos: int, tag: int, vr: bytes, implicit: bool) -> bool:
    """Whether pydicom reads an undefined-length element as a sequence (anything else
    undefined-length: pydicom scans for a delimiter, and we decline)."""
    if not implicit:
        return vr == b"SQ"
    entry = DicomDictionary.get(tag)
    if entry is not None:
        return entry[0] == "SQ"
    if (tag >> 16) % 2 == 0:  # an unlisted public tag (a repeater group): decline
        return False
    return _U32.unpack_from(data, pos)[0] == (_ITEM >> 16 | (_ITEM & 0xFFFF) << 16)


def _skip_items(data: bytes, pos: int, implicit: bool, depth: int) -> int:
    """Past the items of an undefined-length sequence starting at ``pos`` and its delimiter,
    each item parsed as strictly as the top level (every length inside the bytes)."""
    if depth > _MAX_DEPTH:
        raise _Declined
    while True:
        group, elem, length = _IMPLICIT.unpack_from(data, pos)
        tag, pos = group << 16 | elem, pos + 8
        if tag == _SEQ_END:
            if length:
                raise _Declined
            return pos
        if tag != _ITEM:
            raise _Declined
        if length == _UNDEFINED:
            pos = _skip_item(data, pos, None, implicit, depth)
        else:
            if pos + length > len(data):
                raise _Declined
            pos = _skip_item(data, pos, pos + length, implicit, depth)


def _skip_item(data: bytes, pos: int, end: int | None, implicit: bool, depth: int) -> int:
    """Past one item's elements: up to ``end`` exactly, or (``end`` None) its delimiter."""
    if pos != end and _looks_implicit(data, pos) != implicit:
        raise _Declined  # pydicom switches an item to implicit VR: its business
    while end is None or pos < end:
        group, elem, length = _IMPLICIT.unpack_from(data, pos)
        if group == 0xFFFE:  # delimiters have no VR, whatever the encoding
            if elem == _ITEM_END & 0xFFFF and end is None and not length:
                return pos + 8
            raise _Declined
        tag, vr, length, pos = _element(data, pos, implicit)
        if length == _UNDEFINED:
            if not _is_sequence(data, pos, tag, vr, implicit):
                raise _Declined
            pos = _skip_items(data, pos, implicit, depth + 1)
        else:
            pos += length
            if pos > len(data):
                raise _Declined
    if pos != end:
        raise _Declined
    return pos


def _convert(raw: Mapping[int, tuple[bytes, bytes]], want: Mapping[int, Wanted]
             ) -> dict[str, Any]:
    """The wanted values as pydicom gives them, for the simple cases only."""
    charset = raw.get(_CHARSET)
    if charset is not None and charset[1].rstrip(b" \0") not in _CHARSETS:
        raise _Declined
    representation = raw.get(0x00280103)
    values = {}
    for tag, (vr, value) in raw.items():
        spec = want.get(tag)
        if spec is None:
            continue
        vr = vr or spec.vr
        if vr != spec.vr:
            if spec.vr != b"US or SS" or vr not in (b"US", b"SS"):
                raise _Declined
        elif vr == b"US or SS":  # implicit: pydicom goes by PixelRepresentation
            vr = b"US" if representation is None or representation[1] == b"\0\0" else b"SS"
        values[spec.keyword] = _value(vr, value, spec.count)
    return values


def _value(vr: bytes, value: bytes, count: int) -> Any:
    if vr in (b"US", b"SS"):
        if len(value) != 2 or count != 1:
            raise _Declined
        return (_US if vr == b"US" else _SS).unpack(value)[0]
    if vr == b"UI":
        value = value.rstrip(b"\0 ")
    elif vr in (b"CS", b"LO", b"SH", b"DS", b"IS"):
        value = value.rstrip(b" \0") if vr != b"DS" else value.strip(b" ")
    else:
        raise _Declined
    if not value or not _TEXT.match(value.replace(b"\\", b"")):
        raise _Declined
    items = value.split(b"\\")
    if len(items) != count:
        raise _Declined
    if vr == b"DS":
        if not all(_DS.match(item) for item in items):
            raise _Declined
        numbers = [float(item) for item in items]  # a list equals pydicom's MultiValue
        return numbers[0] if count == 1 else numbers
    if vr == b"IS":
        number = int(value) if count == 1 and _IS.match(value) else None
        if number is None or not -_IS_RANGE <= number < _IS_RANGE:  # pydicom: ISfloat past
            raise _Declined  # 2**53, a warning past 2**31
        return number
    if count != 1:
        raise _Declined
    return value.decode("ascii")
