"""Find CT series in a LIDC-IDRI download and read them with pydicom.

Layout-agnostic on purpose: TCIA has shipped the collection in three folder layouts (classic
UID folders, old and new descriptive names; docs/data.md), and file names are not in z
order in one of them. So a series is whatever single-slice DICOM files in one folder share a
SeriesInstanceUID, and slices are ordered by ImagePositionPatient z, never by name. The spacing
between slices comes from those positions too: SliceThickness is often not the step.

Headers are read without pixels (:func:`read_headers`), so the lesion table can be built and a
cohort inspected before any pixel work; every header value the geometry uses is checked there
(a bad value rejects the file, naming it and the value), and a series whose slices do not stack
on one axial grid (gantry tilt, shear) is rejected, never silently mis-placed. The exceptions,
both rare: a file whose pixels need a decoder is decoded once there (so an undecodable slice is
rejected with its file, not found at prepare), and two files at one z are compared pixel by
pixel (identical copies are one slice; different pixels reject the series).
Pixels are :mod:`.pixels`' business: raw reads at the offsets the header pass found for plain
files, and :func:`read_slice_hu` for the rest, which decodes one slice into Hounsfield units with
pydicom, through the pixel-data plugins for compressed transfer syntaxes (docs/lidc.md has the
measured coverage and speed), applying the file's Modality LUT or slope and intercept, and
padding.
"""

from __future__ import annotations

import functools
import math
import sys
import threading
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.uid import UID

from oncopipe.core import limits
from oncopipe.core.errors import DecodeError, LimitError, RejectError, bad_bytes_reject
from oncopipe.datasets.lidc.layout import (
    LAYOUT_TAGS,
    PixelLayout,
    Values,
    header_hash,
    header_values,
    keyword_tags,
    open_dicom,
    padding_range,
    read_dataset,
    read_header,
)
from oncopipe.ingest.parallel import ordered_map

AIR_HU = -1000.0
HEADER_TAGS = ["Modality", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
                "PatientID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                "SliceThickness", "InstanceNumber", "Rows", "Columns", "SamplesPerPixel",
                "NumberOfFrames", "RescaleSlope", "RescaleIntercept"]
_AXIAL = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
# Compressed pixel data: pylibjpeg (with its libjpeg, openjpeg and rle plugins, declared
# dependencies) decodes every syntax GDCM or Pillow does and 12-bit JPEG Extended, which they do
# not (docs/lidc.md); pydicom's own RLE decoder is the fallback. Only these, so the same file
# gives the same HU, or the same reject, on every machine whatever else is installed (lossy
# JPEG differs by 1 between libjpeg builds).
DECODING_PLUGINS = ("pylibjpeg", "pydicom")
# IPP x/y may drift by float rounding only; a tilted gantry moves them by ~step * tan(tilt).
# PixelSpacing may differ between slices by float rounding only: the same 0.05 px, reached at
# the far edge of the image (|difference| x max(Rows, Columns) <= 0.05 x spacing).
_XY_TOL_PX = 0.05
# Value multiplicity 1 in the standard (PS3.6): a second value is a corrupt file, not a choice.
_SINGLE_VALUED = ("SeriesInstanceUID", "InstanceNumber", "SliceThickness", "Rows", "Columns",
                  "SamplesPerPixel", "NumberOfFrames", "BitsAllocated", "BitsStored",
                  "PixelRepresentation", "PhotometricInterpretation", "RescaleSlope",
                  "RescaleIntercept", "PixelPaddingValue", "PixelPaddingRangeLimit")
_INTEGER_TAGS = ("BitsAllocated", "BitsStored", "PixelRepresentation", "PixelPaddingValue",
                 "PixelPaddingRangeLimit")
_IS_LIMIT = 2 ** 31  # an IS value lies in [-2**31, 2**31 - 1] (PS3.5 6.2)
_SEVERAL = (list, tuple, pydicom.multival.MultiValue)  # how pydicom gives several values
_CHECKED = keyword_tags(tuple(dict.fromkeys(HEADER_TAGS + LAYOUT_TAGS)))  # every one a check uses


class SeriesError(RejectError):
    """A series cannot be read; the message names the folder or file."""


class UndecodableSliceError(SeriesError, DecodeError):
    """No installed decoder could turn the file's pixel data into an image."""


@dataclass(frozen=True, slots=True)
class Slice:
    path: Path
    sop_uid: str
    z: float
    instance: int
    layout: PixelLayout | None = None  # where the pixels are (see .layout); None: not known


class _Header(NamedTuple):
    """What the series grouping and the slice table use of one file's header, as plain
    values (a pydicom dataset costs ~25 KB a file; this, a few hundred bytes). Only built from
    a header :func:`header_problem` passed, so every value here is present and valid."""

    series_uid: str
    sop_uid: str
    patient_id: str
    study_uid: str
    position: tuple[float, float, float]  # ImagePositionPatient
    orientation: tuple[float, ...] | None  # ImageOrientationPatient; None: absent (axial)
    spacing: tuple[float, float]  # PixelSpacing (row, column)
    rows: int
    columns: int
    slice_thickness: float  # 0.0 when absent or empty
    instance: int  # 0 when absent or empty
    representation: int  # PixelRepresentation
    layout: PixelLayout

    @classmethod
    def of(cls, values: Values, layout: PixelLayout) -> _Header:
        iop = values.get("ImageOrientationPatient")
        intern = sys.intern  # one copy of the strings every slice of a series repeats
        return cls(intern(str(values["SeriesInstanceUID"])),
                   str(values.get("SOPInstanceUID", "")),
                   intern(str(values.get("PatientID", ""))),
                   intern(str(values.get("StudyInstanceUID", ""))),
                   cast(tuple[float, float, float],
                        tuple(float(v) for v in values["ImagePositionPatient"])),
                   None if iop is None else tuple(float(v) for v in iop),
                   cast(tuple[float, float], tuple(float(v) for v in values["PixelSpacing"])),
                   int(values["Rows"]), int(values["Columns"]),
                   float(values.get("SliceThickness") or 0.0), _instance(values),
                   int(values.get("PixelRepresentation", 0)), layout)


def nearest_slice(zs: np.ndarray, z: float) -> int:
    """Index of the slice position in ``zs`` nearest ``z`` (the first of a tie): the slice a 2D
    crop reads, the one its heat map is shown on, and an roi's slice when its SOP UID is
    unknown; one definition, so the three agree."""
    return int(np.abs(np.asarray(zs, np.float64) - z).argmin())


@dataclass
class SeriesHeader:
    """One CT series from its headers: kept slices sorted by increasing z (pylidc's order)."""

    patient_id: str
    study_uid: str
    series_uid: str
    folder: Path
    slices: list[Slice]
    origin_xy: tuple[float, float]  # ImagePositionPatient x, y of pixel (row 0, column 0)
    spacing_xy: tuple[float, float]  # mm between columns (x) and between rows (y)
    shape_yx: tuple[int, int]
    slice_thickness: float  # the tag, for cohort rules; geometry uses ``z_step``
    rejects: list[tuple[Path, str]] = field(default_factory=list)  # duplicate-z slices
    sop_to_index: dict[str, int] = field(default_factory=dict)  # duplicates map to the kept one

    @property
    def zs(self) -> np.ndarray:
        return np.array([s.z for s in self.slices])

    @property
    def z_step(self) -> float:
        """Median distance between consecutive slice positions (not SliceThickness)."""
        return float(np.median(np.diff(self.zs))) if len(self.slices) > 1 else 0.0

    @property
    def missing_slices(self) -> int:
        """Slices absent from the regular grid (gaps wider than 1.5 steps)."""
        step = self.z_step
        if step <= 0:
            return 0
        gaps = np.diff(self.zs)
        return int(sum(round(g / step) - 1 for g in gaps if g > 1.5 * step))

    @property
    def n_duplicates(self) -> int:
        return len(self.rejects)

    def voxel_to_mm(self, k: float, row: float, col: float) -> tuple[float, float, float]:
        """(slice, row, column) index, possibly fractional -> patient (x, y, z) mm, LPS."""
        zs = self.zs
        z = float(np.interp(k, np.arange(len(zs)), zs)) if len(zs) > 1 else float(zs[0])
        return (self.origin_xy[0] + col * self.spacing_xy[0],
                self.origin_xy[1] + row * self.spacing_xy[1], z)

    def mm_to_voxel(self, x: float, y: float, z: float) -> tuple[float, float, float]:
        zs = self.zs
        k = float(np.interp(z, zs, np.arange(len(zs)))) if len(zs) > 1 else 0.0
        return (k, (y - self.origin_xy[1]) / self.spacing_xy[1],
                (x - self.origin_xy[0]) / self.spacing_xy[0])


def read_headers(files: list[Path], workers: int = 0, cache: HeaderCache | None = None
                 ) -> tuple[list[SeriesHeader], list[tuple[Path, str]]]:
    """Group DICOM ``files`` into CT series by folder and SeriesInstanceUID.

    Returns the series (sorted by folder and UID) and the rejected files with reasons
    (unreadable, not CT, duplicate z, inconsistent geometry). Every input file ends up in
    exactly one of the two. Headers are read in ``workers`` processes (0 or 1: this one), with
    a progress bar; with ``cache``, in this process, each file's header parsed only when the
    cache has not seen its header bytes.
    """
    series: list[SeriesHeader] = []
    rejects: list[tuple[Path, str]] = []
    by_folder = sorted(files, key=lambda p: p.parent)  # stable: each folder's files together
    results = (map(cache.read, by_folder) if cache is not None else
               ordered_map(_read_header, by_folder, workers, desc="DICOM headers"))
    for found, rejected in _by_folder(results):
        series.extend(found)
        rejects.extend(rejected)
    series.sort(key=lambda h: (h.folder, h.series_uid))
    return series, rejects


def iter_series(files: Iterable[Path], workers: int = 0
                ) -> Iterator[tuple[list[SeriesHeader], list[tuple[Path, str]]]]:
    """:func:`read_headers` for ``files`` that come folder by folder (each folder's files
    together, as :func:`oncopipe.ingest.rawfiles.walk_folders` yields them): one (series, rejects)
    pair per folder, yielded once its last file is read, so only one folder's header values
    are held at a time whatever the number of files.
    """
    return _by_folder(ordered_map(_read_header, files, workers, desc="DICOM headers"))


def _by_folder(results: Iterable[tuple[Path, _Header | None, str]]
               ) -> Iterator[tuple[list[SeriesHeader], list[tuple[Path, str]]]]:
    folder: Path | None = None
    groups: dict[str, list[tuple[Path, _Header]]] = defaultdict(list)
    rejects: list[tuple[Path, str]] = []
    for path, header, error in results:
        if path.parent != folder:
            if folder is not None:
                yield _folder_series(folder, groups, rejects)
            folder, groups, rejects = path.parent, defaultdict(list), []
        if header is None:
            rejects.append((path, error))
        else:
            groups[header.series_uid].append((path, header))
    if folder is not None:
        yield _folder_series(folder, groups, rejects)


class HeaderCache:
    """Header values of plain files (:mod:`.layout`) already parsed, found again by content.

    ``predict`` and ``serve`` get one series per request, often the same one again (and
    ``serve`` unpacks every upload into a new folder), so a file is known by its bytes, not
    its path: its size and the first :data:`_KEY_BYTES` bytes (the preamble and file meta
    header, with the file's SOP Instance UID) find an entry, which is used only when the hash
    of every byte before its pixel values equals the one the parse recorded
    (``PixelLayout.header_hash``) and the size is the same. Those bytes and the size are all
    the header pass reads of a plain file, so a hit gives what parsing it again would. Files
    that need a decoder are parsed every time (the header pass decodes them). At most
    ``max_files`` entries, least recently used first out. ``serve`` reads series in several
    threads at once: the entries change under a lock (a lookup and its move to the recent end
    are one step), the files are read and parsed outside it.
    """

    def __init__(self, max_files: int = 20_000):
        self.max_files = max_files
        self._entries: OrderedDict[tuple, _Header] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def read(self, path: Path) -> tuple[Path, _Header | None, str]:
        """What :func:`_read_header` gives for ``path``, parsed only on a miss."""
        key, head = self._probe(path)
        with self._lock:
            entry = self._entries.get(key) if key is not None else None
        if key is not None and entry is not None and head is not None:
            n = entry.layout.header_bytes
            if n > len(head):
                with open_dicom(path) as (fp, _):
                    head = fp.read(n)
            if len(head) >= n and header_hash(head[:n]) == entry.layout.header_hash:
                with self._lock:
                    if key in self._entries:  # another thread may have evicted it meanwhile
                        self._entries.move_to_end(key)
                    self.hits += 1
                return path, entry, ""
        with self._lock:
            self.misses += 1
        result = _read_header(path, (head, key[0]) if key is not None and head else None)
        header = result[1]
        if key is not None and header is not None and header.layout.plain:
            with self._lock:
                self._entries[key] = header
                while len(self._entries) > self.max_files:
                    self._entries.popitem(last=False)
        return result

    @staticmethod
    def _probe(path: Path) -> tuple[tuple | None, bytes | None]:
        """The cache key of ``path`` and its first bytes (None, None: unreadable or too
        large; the parse says why)."""
        try:
            with open_dicom(path) as (fp, size):
                head = fp.read(_PROBE_BYTES)
        except (OSError, RejectError):
            return None, None
        return (size, header_hash(head[:_KEY_BYTES]), limits.active()), head


_KEY_BYTES = 1024
_PROBE_BYTES = 8192  # most CT headers end before this: one read finds the key and checks it
HEADER_CACHE = HeaderCache()  # predict's and serve's, per process


def _folder_series(folder: Path, groups: dict[str, list[tuple[Path, _Header]]],
                   rejects: list[tuple[Path, str]]
                   ) -> tuple[list[SeriesHeader], list[tuple[Path, str]]]:
    """The series of one folder's header values (by UID), and every rejected file."""
    series = []
    for uid, members in sorted(groups.items()):
        try:
            members, odd = _split_representation(folder, members)
            rejects.extend(odd)
            header = _build(folder, uid, members)
        except SeriesError as exc:
            rejects.extend((p, f"series rejected: {exc}") for p, _ in members)
            continue
        rejects.extend(header.rejects)
        series.append(header)
    return series, rejects


def _read_header(path: Path, head: tuple[bytes, int] | None = None
                 ) -> tuple[Path, _Header | None, str]:
    """One file's header values and pixel layout, or None and why it is not a usable CT slice
    (``head``: see :func:`.layout.read_header`).

    A file whose pixels are not plain (:mod:`.layout`) is decoded here once, so a slice whose
    pixels cannot be read is set aside now, as one file, and ``prepare_lidc`` (which reads
    only the slices this pass kept) cannot lose a whole series to it later. A header with a
    problem is read again through pydicom: the reason shows the values as pydicom gives them,
    whichever way the file was first read.
    """
    try:
        values, layout = read_header(path, HEADER_TAGS, head=head)
        problem = _problem(values)
        if problem:
            values, layout = read_header(path, HEADER_TAGS, scan=False)
            problem = _problem(values)
    except LimitError as exc:
        return path, None, f"too large: {_unnamed(exc, path)}"
    except RejectError as exc:
        return path, None, _unnamed(exc, path)
    except OSError as exc:
        return path, None, f"unreadable DICOM: {exc}"
    if problem:
        return path, None, problem
    if not layout.plain:
        try:
            read_slice_hu(path)
        except RejectError as exc:
            return path, None, f"bad pixel data: {_unnamed(exc, path)}"
    return path, _Header.of(values, layout), ""


def _problem(values: Values) -> str:
    """Why the header is not a usable CT slice's ('' when it is)."""
    modality = str(values.get("Modality", ""))
    if modality != "CT":
        return f"not CT: Modality {modality or 'missing'}, skipped"
    problem = header_problem(values)
    return f"bad header: {problem}" if problem else ""


def _unnamed(exc: Exception, path: Path) -> str:
    """An error's message without its leading ``<path>: `` (the reject row names the file)."""
    return str(exc).removeprefix(f"{path}: ")


def header_problem(values: Values) -> str:
    """Why a CT header cannot place its slice ('' when it can): every value the geometry and
    the HU conversion use must be present, numeric and finite, and the pixel data decodable
    (:func:`pixel_problem`).
    """
    for tag in ("SeriesInstanceUID", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns"):
        if tag not in values or values[tag] in (None, ""):
            return f"{tag} missing"
    problem = _multi_valued(values)
    if problem:
        return problem
    checks = (("ImagePositionPatient", 3, False), ("PixelSpacing", 2, True),
              ("ImageOrientationPatient", 6, False))
    for tag, n, positive in checks:
        if tag not in values:
            continue  # only IOP may be absent: LIDC's axial default
        numbers = _numbers(values[tag])
        if numbers is None or len(numbers) != n or (positive and min(numbers) <= 0):
            return f"{tag} {_shown(values[tag])} is not {n} finite numbers" + (
                " > 0" if positive else "")
    for tag in ("Rows", "Columns"):
        if not isinstance(values[tag], int) or values[tag] < 1:
            return f"{tag} {_shown(values[tag])} is not a positive integer"
    for tag in ("InstanceNumber", "SliceThickness"):
        if values.get(tag) not in (None, "") and _numbers(values[tag]) is None:
            return f"{tag} {_shown(values[tag])} is not a finite number"
    instance = values.get("InstanceNumber")
    if instance not in (None, ""):
        number = float(instance)
        if not number.is_integer():
            return f"InstanceNumber {_shown(instance)} is not an integer"
        if not -_IS_LIMIT <= number < _IS_LIMIT:
            return (f"InstanceNumber {_shown(instance)} is outside the range of an "
                    "integer string (IS)")
    return _pixel_problem(values)


def _multi_valued(values: Values) -> str:
    """Why a tag that holds one value holds several ('' when none does)."""
    for tag in _SINGLE_VALUED:
        value = values.get(tag)
        if isinstance(value, _SEVERAL):
            return f"{tag} {_shown(value)} has {len(value)} values, expected one"
    return ""


def pixel_problem(values: Values) -> str:
    """Why the file's pixels cannot become one HU slice ('' when they can).

    Every value the decode and the HU conversion use is one value of the right type, and
    Rows x Columns is within ``limits.max_image_pixels``: checked before anything decodes
    or allocates.
    """
    return _multi_valued(values) or _pixel_problem(values)


def _pixel_problem(values: Values) -> str:
    """:func:`pixel_problem` once :func:`_multi_valued` has found nothing."""
    for tag in ("RescaleSlope", "RescaleIntercept"):  # present and empty: no default HU
        if tag in values and _numbers(values[tag]) is None:
            shown = "(empty)" if values[tag] in (None, "") else _shown(values[tag])
            return f"{tag} {shown} is not a finite number"
    if ("RescaleSlope" in values) != ("RescaleIntercept" in values):
        return "RescaleSlope and RescaleIntercept must come together"
    if "RescaleSlope" in values and float(values["RescaleSlope"]) == 0:
        return "RescaleSlope is 0"
    try:
        samples = int(values.get("SamplesPerPixel") or 1)
        frames = int(values.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return f"NumberOfFrames {_shown(values.get('NumberOfFrames'))} is not an integer"
    if samples != 1 or frames != 1:
        return (f"not a single-frame greyscale slice (SamplesPerPixel {samples}, "
                f"NumberOfFrames {frames})")
    photometric = str(values.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return f"PhotometricInterpretation {photometric} is not greyscale"
    problem = _decoder_problem(values)
    if problem:
        return problem
    for tag in ("Rows", "Columns"):  # absent: the decoder says so
        value = values.get(tag)
        if value is not None and (not isinstance(value, int) or value < 1):
            return f"{tag} {_shown(value)} is not a positive integer"
    for tag in _INTEGER_TAGS:  # present means one integer: empty is not "absent"
        value = values.get(tag, 0)
        if not isinstance(value, int) or not -_IS_LIMIT <= value < 2 * _IS_LIMIT:
            return f"{tag} {'(empty)' if value is None else _shown(value)} is not an integer"
    if int(values.get("PixelRepresentation", 0)) not in (0, 1):
        return f"PixelRepresentation {values['PixelRepresentation']} is neither 0 nor 1"
    try:
        limits.active().check("max_image_pixels",
                              values.get("Rows", 1) * values.get("Columns", 1), "Rows x Columns")
    except LimitError as exc:
        return str(exc)
    return ""


def _decoder_problem(values: Values) -> str:
    """'' when a pixel-data decoder for the file's transfer syntax is installed."""
    tsyntax = values.get("TransferSyntaxUID")  # from the file meta (see .layout.header_values)
    if not tsyntax:
        return "no TransferSyntaxUID in the file meta header"
    return _syntax_problem(str(tsyntax))


@functools.cache
def _syntax_problem(uid: str) -> str:
    tsyntax = UID(uid)
    try:
        decoder = get_decoder(tsyntax)
    except (NotImplementedError, ValueError):
        return f"transfer syntax {_syntax(tsyntax)} has no pixel-data decoder"
    if tsyntax.is_compressed and not set(decoder.available_plugins) & set(DECODING_PLUGINS):
        return (f"transfer syntax {_syntax(tsyntax)}: no decoder installed "
                "(pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle)")
    return ""


def _numbers(value: object) -> list[float] | None:
    """The value as finite floats (one or many), or None when any is not a number."""
    items: list[Any] = list(value) if isinstance(value, _SEVERAL) else [value]
    try:
        out = [float(v) for v in items]
    except (TypeError, ValueError):
        return None
    return out if all(math.isfinite(v) for v in out) else None


def _shown(value: object) -> str:
    """A header value for a message, cut short: these are geometry tags, never identifiers."""
    if isinstance(value, pydicom.multival.MultiValue):
        text = "[" + ", ".join(str(v) for v in value) + "]"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _syntax(uid: str) -> str:
    uid = UID(str(uid))
    return f"{uid.name} ({uid})" if uid.name != str(uid) else str(uid)


def _split_representation(folder: Path, members: list[tuple[Path, _Header]]
                          ) -> tuple[list[tuple[Path, _Header]], list[tuple[Path, str]]]:
    """The members stored as most of the series is (PixelRepresentation), and the others set
    aside with a reason.

    A series comes from one scanner and is stored one way; one slice marked unsigned in a
    signed series would read its negative values as about 65,500 (and the reverse), so it is
    set aside rather than read as it says. An even split cannot be told apart: the series is
    rejected.
    """
    signs = Counter(h.representation for _, h in members)
    if len(signs) < 2:
        return members, []
    (usual, n), (other, m) = signs.most_common(2)
    if n == m:
        raise SeriesError(f"{folder}: {n} slices are PixelRepresentation {usual} and {m} are "
                          f"{other}: the series' own cannot be told")
    named = {0: "0 (unsigned)", 1: "1 (signed)"}
    kept = [(p, h) for p, h in members if h.representation == usual]
    odd = [(p, f"PixelRepresentation {named[h.representation]} in a series "
               f"whose other {n} slices are {named[usual]}: its pixels would be misread")
           for p, h in members if h.representation != usual]
    return kept, odd


def _same_spacing(a: _Header, b: _Header) -> bool:
    """PixelSpacing equal up to float rounding (see ``_XY_TOL_PX``)."""
    extent = max(a.rows, a.columns)
    return all(abs(x - y) * extent <= _XY_TOL_PX * y
               for x, y in zip(a.spacing, b.spacing, strict=True))


def _build(folder: Path, uid: str, members: list[tuple[Path, _Header]]) -> SeriesHeader:
    first = members[0][1]
    iops = np.array([h.orientation if h.orientation is not None else _AXIAL
                     for _, h in members], np.float64)
    tilted = ~(np.abs(iops - _AXIAL) <= 1e-3 + 1e-5 * np.abs(_AXIAL)).all(axis=1)  # allclose
    for (path, h), iop, off_axis in zip(members, iops, tilted, strict=True):
        if off_axis:
            raise SeriesError(f"{path}: non-axial ImageOrientationPatient {iop.tolist()}")
        same = (h.rows == first.rows and h.columns == first.columns
                and _same_spacing(h, first))
        if not same:
            raise SeriesError(f"{path}: Rows/Columns/PixelSpacing differ within the series")
    try:
        limits.active().check("max_voxels", len(members) * first.rows * first.columns,
                              f"{folder}: slices x Rows x Columns")
    except LimitError as exc:
        raise SeriesError(str(exc)) from None
    # Sort by z, then InstanceNumber and file name, so the kept duplicate is deterministic.
    ordered = sorted(members, key=lambda m: (round(m[1].position[2], 3), m[1].instance,
                                             m[0].name))
    _check_stack(folder, ordered, first.spacing[0])
    slices: list[Slice] = []
    rejects: list[tuple[Path, str]] = []
    sop_to_index: dict[str, int] = {}
    for path, h in ordered:
        z = h.position[2]
        sop = h.sop_uid
        if slices and abs(z - slices[-1].z) < 1e-3:
            kept = slices[-1]
            if not np.array_equal(read_slice_hu(kept.path), read_slice_hu(path)):
                raise SeriesError(f"{path}: at z {z:g} mm, the position of {kept.path.name}, "
                                  "with other pixels: which one belongs to the series cannot "
                                  "be told")
            rejects.append((path, f"duplicate z: {z:g} mm, the position of {kept.path.name} "
                                  f"(InstanceNumber {kept.instance}), which was kept"))
            sop_to_index[sop] = len(slices) - 1
            continue
        slices.append(Slice(path, sop, z, h.instance, h.layout))
        sop_to_index[sop] = len(slices) - 1
    row_mm, col_mm = first.spacing
    ipp = ordered[0][1].position  # the lowest slice: where the volume starts
    return SeriesHeader(
        patient_id=first.patient_id,
        study_uid=first.study_uid,
        series_uid=uid,
        folder=folder,
        slices=slices,
        origin_xy=(ipp[0], ipp[1]),
        spacing_xy=(col_mm, row_mm),
        shape_yx=(first.rows, first.columns),
        slice_thickness=first.slice_thickness,
        rejects=rejects,
        sop_to_index=sop_to_index,
    )


def _instance(values: Values) -> int:
    value = values.get("InstanceNumber")
    return 0 if value in (None, "") else int(float(value))


def _check_stack(folder: Path, ordered: list[tuple[Path, _Header]],
                 pixel_mm: float) -> None:
    """Reject a series whose slices do not stack on one axial grid.

    With an axial orientation every slice must start at the same (x, y): a gantry-tilted or
    sheared acquisition moves it along z, and treating such a series as a regular volume would
    misplace every lesion away from the first slice. Resampling onto an orthogonal grid is not
    done: LIDC's LUNA16-style cohorts leave these series out, and a reject is explicit.
    """
    xy = np.array([h.position[:2] for _, h in ordered])
    drift = np.abs(xy - xy[0]).max(axis=0)
    if drift.max() > _XY_TOL_PX * pixel_mm:
        worst = int(np.abs(xy - xy[0]).max(axis=1).argmax())
        raise SeriesError(
            f"{folder}: ImagePositionPatient x/y changes along z (gantry tilt or shear): up to "
            f"{drift[0]:.3g} mm in x and {drift[1]:.3g} mm in y, at {ordered[worst][0].name}; "
            "such series are rejected, not resampled")


def read_slice_hu(path: Path) -> np.ndarray:
    """One slice in HU (float32): pydicom's Modality LUT (the sequence, or slope and
    intercept), padding pixels set to air.

    Compressed pixel data is decoded by the first of :data:`DECODING_PLUGINS` that can. A file
    that cannot be read, decoded or is not one greyscale frame raises :class:`SeriesError`
    naming the file (and, for a decoding failure, its transfer syntax). Geometry is the header
    pass's business (:func:`header_problem`), not checked again here.
    """
    try:
        with open_dicom(path) as (fp, _):
            ds = read_dataset(fp, path)
    except OSError as exc:
        raise SeriesError(f"{path}: unreadable DICOM: {exc}") from None
    except DecodeError as exc:
        raise UndecodableSliceError(str(exc)) from exc
    values = header_values(ds, _CHECKED)
    problem = ("" if "PixelData" in ds else "no PixelData") or pixel_problem(values)
    if problem:
        raise SeriesError(f"{path}: {problem}")
    raw = _decode(path, ds)
    if raw.shape != (ds.Rows, ds.Columns):
        raise SeriesError(f"{path}: pixel data {raw.shape} != Rows/Columns "
                          f"{(ds.Rows, ds.Columns)}")
    with bad_bytes_reject(path, "Modality LUT", error=UndecodableSliceError):
        pad = padding_range(values)
        hu = np.asarray(apply_modality_lut(raw, ds), np.float32)
    if pad is not None:
        hu[(raw >= pad[0]) & (raw <= pad[1])] = AIR_HU
    return hu


def _decode(path: Path, ds: pydicom.Dataset) -> np.ndarray:
    """Stored pixel values; a file that no installed plugin decodes raises SeriesError."""
    tsyntax = UID(str(ds.file_meta.TransferSyntaxUID))  # present: checked by pixel_problem
    plugins = DECODING_PLUGINS if tsyntax.is_compressed else ("",)
    errors = []
    for plugin in plugins:
        if plugin and plugin not in get_decoder(tsyntax).available_plugins:
            continue
        try:  # plugins raise many types, a Rust one a BaseException panic
            with bad_bytes_reject(path, plugin or "pydicom"):
                if not plugin:
                    return ds.pixel_array
                return get_decoder(tsyntax).as_array(ds, decoding_plugin=plugin)[0]
        except DecodeError as exc:
            errors.append(f"{plugin or 'pydicom'}: {' '.join(str(exc.__cause__).split())[:200]}")
    raise UndecodableSliceError(f"{path}: cannot decode pixel data ({_syntax(tsyntax)}): "
                                f"{'; '.join(errors) or 'no decoder installed'}")
