"""Parse LIDC-IDRI reader XML (``LidcReadMessage``) into plain marks, namespace-agnostic.

Namespaces are not consistent between the real files (default ``http://www.nih.gov``, none,
or prefixed), so every element is matched on its local name. Quirks survived here (see
../shared/DATASETS.md): ``noduleID`` is free text; ``characteristics`` may be missing or an
empty element; ``inclusion`` FALSE rois are holes; single-point rois occur inside >= 3 mm
nodules; reading sessions are anonymous and in no fixed order. Anything unusable inside an
otherwise good file (an roi without a z position, a rating that is not a number) is kept as a
``problem`` string so the caller can record it; a file that is not a CT read at all raises
:class:`AnnotationError` naming the file.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from oncopipe.errors import RejectError

RATINGS = ("subtlety", "internalStructure", "calcification", "sphericity", "margin",
           "lobulation", "spiculation", "texture", "malignancy")


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


def root_name(path: Path) -> str:
    """Local name of the root element (``LidcReadMessage``, ``IdriReadMessage``, ...)."""
    try:
        for _, el in ET.iterparse(path, events=("start",)):
            return local(el.tag)
    except ET.ParseError as exc:
        raise AnnotationError(f"{path}: not well-formed XML ({exc})") from None
    raise AnnotationError(f"{path}: empty XML")


def parse(path: Path) -> ReadMessage:
    """Parse one CT read. Raises :class:`AnnotationError` for a malformed or non-CT file."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise AnnotationError(f"{path}: not well-formed XML ({exc})") from None
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
    rois = []
    for roi in _children(el, "roi"):
        z = _float(_text(roi, "imageZposition"))
        points = tuple(p for p in map(_point, _children(roi, "edgeMap")) if p is not None)
        if z is None or not points:
            problems.append(f"{where}: roi without imageZposition or edgeMap, ignored")
            continue
        inclusion = _text(roi, "inclusion").upper() != "FALSE"
        rois.append(Roi(z, _text(roi, "imageSOP_UID"), inclusion, points))
    if not rois:
        problems.append(f"{where}: no usable roi, mark ignored")
        return None
    return NoduleMark(reader, nid, _characteristics(el, where, problems), tuple(rois))


def _characteristics(el: ET.Element, where: str, problems: list[str]) -> dict[str, int] | None:
    chars = _child(el, "characteristics")
    if chars is None:
        return None
    out: dict[str, int] = {}
    for c in chars:
        name, text = local(c.tag), (c.text or "").strip()
        if name not in RATINGS:
            continue
        value = _float(text)
        if value is None or value != int(value):
            problems.append(f"{where}: rating {name}={text!r} is not an integer, ignored")
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
