"""Parse LIDC-IDRI reader XML (``LidcReadMessage``) into plain marks, namespace-agnostic.

Namespaces are not consistent between the real files (default ``http://www.nih.gov``, none,
or prefixed), so every element is matched on its local name. Quirks survived here (see
docs/data.md): ``noduleID`` is free text; ``characteristics`` may be missing or an
empty element; ``inclusion`` FALSE rois are holes; single-point rois occur inside >= 3 mm
nodules; reading sessions are anonymous and in no fixed order. Anything unusable inside an
otherwise good file (an roi without a z position, a rating that is not a number) is kept as a
``problem`` string so the caller can record it; a file that is not a CT read at all raises
:class:`AnnotationError` naming the file.

Hostile files: the size is checked against ``limits.max_table_bytes`` before parsing; a
document type declaration is refused (LIDC XML has none, and a DTD is where entity expansion
bombs live); reading sessions (the release has at most 4) and rois are counted as the parser
meets them and the file is refused past ``limits.max_reading_sessions`` / ``limits.max_rois``,
so no clustering ever sees thousands of readers; a mark with more contour points than
``limits.max_mark_points`` is set aside (recorded), since clustering compares every point of
two marks; exact copies of an roi within a mark are
dropped (recorded), since pylidc's clustering compares every contour point of two marks. A
rating outside its documented range (:data:`RATING_RANGE`) sets its mark aside, naming the
value.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from oncopipe.core import limits
from oncopipe.core.errors import LimitError, RejectError

RATINGS = ("subtlety", "internalStructure", "calcification", "sphericity", "margin",
           "lobulation", "spiculation", "texture", "malignancy")
#: the values each rating may take (LIDC-IDRI documentation, as pylidc's Annotation lists them)
RATING_RANGE = {**dict.fromkeys(RATINGS, (1, 5)), "internalStructure": (1, 4),
                "calcification": (1, 6)}
_CHUNK = 1 << 16


class AnnotationError(RejectError):
    """The file is not a usable LIDC CT read; the message names the file and the problem."""


@dataclass(frozen=True)
class Roi:
    z: float  # imageZposition: the slice's ImagePositionPatient z
    sop_uid: str
    inclusion: bool  # False: a hole to subtract
    points: tuple[tuple[int, int], ...]  # (x = column, y = row) pixel indices


@dataclass(frozen=True)
class NoduleMark:
    """One reader's ``unblindedReadNodule``: a nodule >= 3 mm (contours) or < 3 mm (a point)."""

    reader: int  # reading-session index within the file
    nodule_id: str
    characteristics: dict[str, int] | None  # None when missing or empty
    rois: tuple[Roi, ...]

    @property
    def kind(self) -> str:
        """``small_nodule`` for an unrated mark made only of single points, else ``nodule``."""
        if self.characteristics is None and all(len(r.points) <= 1 for r in self.rois):
            return "small_nodule"
        return "nodule"


@dataclass(frozen=True)
class NonNoduleMark:
    reader: int
    nodule_id: str
    z: float
    sop_uid: str
    point: tuple[int, int]  # (x = column, y = row)


@dataclass
class ReadMessage:
    path: Path
    series_uid: str
    study_uid: str
    n_sessions: int
    nodules: list[NoduleMark] = field(default_factory=list)
    non_nodules: list[NonNoduleMark] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def local(tag: str) -> str:
    """``{namespace}name`` -> ``name``."""
    return tag.rsplit("}", 1)[-1]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in el if local(c.tag) == name), None)


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if local(c.tag) == name]


def _text(el: ET.Element, name: str) -> str:
    c = _child(el, name)
    return (c.text or "").strip() if c is not None else ""


class _RootFound(Exception):
    """Not an error: stops the parse at the root element, whose local name it carries."""


class _Builder(ET.TreeBuilder):
    """A tree builder that refuses a DTD and counts reading sessions and rois as they open,
    stopping at a limit (or, with ``root_only``, at the first element)."""

    def __init__(self, path: Path, root_only: bool = False) -> None:
        super().__init__()
        self.path, self.root_only = path, root_only
        self.counts = {"readingSession": 0, "roi": 0}
        self.limits = limits.active()

    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise AnnotationError(f"{self.path}: has a document type declaration ({name}); "
                              "LIDC XML has none, and DTDs and entities are refused")

    def start(self, tag: str, attrs: dict[str, str]) -> ET.Element:
        name = local(tag)
        if self.root_only:
            raise _RootFound(name)
        if name in self.counts:
            self.counts[name] += 1
            limit = "max_reading_sessions" if name == "readingSession" else "max_rois"
            self.limits.check(limit, self.counts[name], f"{self.path}: {name} elements")
        return super().start(tag, attrs)


def _parse(path: Path, root_only: bool = False) -> ET.Element:
    """The parsed root of ``path`` (see :class:`_Builder`); every problem an AnnotationError."""
    try:
        limits.active().check("max_table_bytes", os.stat(path).st_size, path)
        parser = ET.XMLParser(target=_Builder(path, root_only))
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                parser.feed(chunk)
        return parser.close()
    except ET.ParseError as exc:
        raise AnnotationError(f"{path}: not well-formed XML ({exc})") from None
    except (LookupError, UnicodeError) as exc:  # an encoding expat does not know
        raise AnnotationError(f"{path}: not readable XML ({exc})") from None
    except LimitError as exc:
        raise AnnotationError(str(exc)) from None


def root_name(path: Path) -> str:
    """Local name of the root element (``LidcReadMessage``, ``IdriReadMessage``, ...)."""
    try:
        _parse(path, root_only=True)
    except _RootFound as found:
        return str(found)
    raise AnnotationError(f"{path}: empty XML")


def parse(path: Path) -> ReadMessage:
    """Parse one CT read. Raises :class:`AnnotationError` for a malformed or non-CT file."""
    root = _parse(path)
    if local(root.tag) != "LidcReadMessage":
        raise AnnotationError(f"{path}: root element {local(root.tag)!r} is not a CT read "
                              "(LidcReadMessage); IdriReadMessage files are radiograph reads")
    header = _child(root, "ResponseHeader")
    series_uid = _text(header, "SeriesInstanceUid") if header is not None else ""
    study_uid = ""
    if header is not None:
        study_uid = _text(header, "StudyInstanceUID") or _text(header, "StudyInstanceUid")
    sessions = _children(root, "readingSession")
    msg = ReadMessage(path=path, series_uid=series_uid, study_uid=study_uid,
                      n_sessions=len(sessions))
    for reader, session in enumerate(sessions):
        for el in _children(session, "unblindedReadNodule"):
            nodule = _nodule(el, reader, msg.problems)
            if nodule is not None:
                msg.nodules.append(nodule)
        for el in _children(session, "nonNodule"):
            non_nodule = _non_nodule(el, reader, msg.problems)
            if non_nodule is not None:
                msg.non_nodules.append(non_nodule)
    return msg


def _float(text: str) -> float | None:
    """A finite number, or None (so 'NaN' or 'inf' become a recorded problem, not a crash)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _point(el: ET.Element) -> tuple[int, int] | None:
    x, y = _float(_text(el, "xCoord")), _float(_text(el, "yCoord"))
    return None if x is None or y is None else (round(x), round(y))


def _nodule(el: ET.Element, reader: int, problems: list[str]) -> NoduleMark | None:
    nid = _text(el, "noduleID")
    where = f"reader {reader} nodule {nid!r}"
    n_points = sum(len(_children(roi, "edgeMap")) for roi in _children(el, "roi"))
    try:
        limits.active().check("max_mark_points", n_points, f"{where}: contour points")
    except LimitError as exc:
        problems.append(f"{exc}; mark not used")
        return None
    rois = []
    for roi in _children(el, "roi"):
        z = _float(_text(roi, "imageZposition"))
        points = tuple(p for p in map(_point, _children(roi, "edgeMap")) if p is not None)
        if z is None or not points:
            problems.append(f"{where}: roi without imageZposition or edgeMap, ignored")
            continue
        inclusion = _text(roi, "inclusion").upper() != "FALSE"
        rois.append(Roi(z, _text(roi, "imageSOP_UID"), inclusion, points))
    unique = list(dict.fromkeys(rois))  # an exact copy adds nothing but clustering work
    if len(unique) < len(rois):
        problems.append(f"{where}: {len(rois) - len(unique)} exact copies of an roi, ignored")
        rois = unique
    if not rois:
        problems.append(f"{where}: no usable roi, mark ignored")
        return None
    chars = _child(el, "characteristics")
    out_of_range = _out_of_range(chars) if chars is not None else ""
    if out_of_range:
        problems.append(f"{where}: rating {out_of_range}, mark not used")
        return None
    return NoduleMark(reader, nid, _characteristics(chars, where, problems), tuple(rois))


def _out_of_range(chars: ET.Element) -> str:
    """The first rating outside :data:`RATING_RANGE` as ``name=value outside lo-hi`` ('' if
    none): a mark carrying one is corrupt, not merely unrated."""
    for c in chars:
        name, text = local(c.tag), (c.text or "").strip()
        value = _float(text)
        if name in RATING_RANGE and value is not None and value == int(value):
            lo, hi = RATING_RANGE[name]
            if not lo <= value <= hi:
                return f"{name}={text[:40]!r} outside {lo}-{hi}"
    return ""


def _characteristics(chars: ET.Element | None, where: str,
                     problems: list[str]) -> dict[str, int] | None:
    if chars is None:
        return None
    out: dict[str, int] = {}
    for c in chars:
        name, text = local(c.tag), (c.text or "").strip()
        if name not in RATINGS:
            continue
        value = _float(text)
        if value is None or value != int(value):
            problems.append(f"{where}: rating {name}={text[:40]!r} is not an integer, ignored")
            continue
        out[name] = int(value)
    return out or None


def _non_nodule(el: ET.Element, reader: int, problems: list[str]) -> NonNoduleMark | None:
    nid = _text(el, "nonNoduleID")
    z = _float(_text(el, "imageZposition"))
    locus = _child(el, "locus")
    point = _point(locus) if locus is not None else None
    if z is None or point is None:
        problems.append(f"reader {reader} non-nodule {nid!r}: no imageZposition or locus, "
                        "ignored")
        return None
    return NonNoduleMark(reader, nid, z, _text(el, "imageSOP_UID"), point)
