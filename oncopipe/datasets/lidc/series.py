"""Find CT series in a LIDC-IDRI download and read them with pydicom.

Layout-agnostic on purpose: TCIA has shipped the collection in three folder layouts (classic
UID folders, old and new descriptive names; ../shared/DATASETS.md), and file names are not in z
order in one of them. So a series is whatever single-slice DICOM files in one folder share a
SeriesInstanceUID, and slices are ordered by ImagePositionPatient z, never by name. The spacing
between slices comes from those positions too: SliceThickness is often not the step.

Headers are read without pixels (:func:`read_headers`), so the lesion table can be built and a
cohort inspected before any pixel work; :func:`read_volume` then decodes the kept slices into
Hounsfield units, applying each file's own slope, intercept and padding value.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from oncopipe.datasets.lidc.layout import PixelLayout, read_header
from oncopipe.parallel import ordered_map

AIR_HU = -1000.0
_HEADER_TAGS = ["Modality", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
                "PatientID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                "SliceThickness", "InstanceNumber", "Rows", "Columns"]
_AXIAL = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])


class SeriesError(ValueError):
    """A series cannot be read; the message names the folder or file."""


@dataclass(frozen=True)
class Slice:
    path: Path
    sop_uid: str
    z: float
    instance: int
    layout: PixelLayout | None = None  # where the pixels are (see .layout); None: not known


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


def list_files(raw: Path) -> list[Path]:
    """Every file under ``raw``, sorted (hidden files and folders skipped)."""
    if not raw.is_dir():
        raise SeriesError(f"{raw}: raw LIDC-IDRI folder not found")
    return sorted(p for p in raw.rglob("*")
                  if p.is_file() and not any(part.startswith(".")
                                             for part in p.relative_to(raw).parts))


def read_headers(files: list[Path], workers: int = 0
                 ) -> tuple[list[SeriesHeader], list[tuple[Path, str]]]:
    """Group DICOM ``files`` into CT series by folder and SeriesInstanceUID.

    Returns the series and the rejected files with reasons (unreadable, not CT, duplicate z,
    inconsistent geometry). Every input file ends up in exactly one of the two. Headers are
    read in ``workers`` processes (0 or 1: this one), with a progress bar.
    """
    rejects: list[tuple[Path, str]] = []
    groups: dict[tuple[Path, str], list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    layouts: dict[Path, PixelLayout] = {}
    for path, ds, layout, error in ordered_map(_read_header, files, workers,
                                               desc="DICOM headers"):
        if ds is None:
            rejects.append((path, error))
        else:
            groups[(path.parent, str(ds.SeriesInstanceUID))].append((path, ds))
            layouts[path] = layout
    series = []
    for (folder, uid), members in sorted(groups.items()):
        try:
            header = _build(folder, uid, members, layouts)
        except SeriesError as exc:
            rejects.extend((p, f"series rejected: {exc}") for p, _ in members)
            continue
        rejects.extend(header.rejects)
        series.append(header)
    return series, rejects


def _read_header(path: Path
                 ) -> tuple[Path, pydicom.Dataset | None, PixelLayout | None, str]:
    """One file's header and pixel layout, or None and why it is not a usable CT slice."""
    try:
        ds, layout = read_header(path, _HEADER_TAGS)
    except (InvalidDicomError, OSError, ValueError) as exc:
        return path, None, None, f"unreadable DICOM: {exc}"
    modality = str(ds.get("Modality", ""))
    if modality != "CT":
        return path, None, None, f"not CT: Modality {modality or 'missing'}, skipped"
    if "ImagePositionPatient" not in ds or "SeriesInstanceUID" not in ds:
        return path, None, None, "CT slice without ImagePositionPatient or SeriesInstanceUID"
    return path, ds, layout, ""


def _build(folder: Path, uid: str, members: list[tuple[Path, pydicom.Dataset]],
           layouts: dict[Path, PixelLayout]) -> SeriesHeader:
    first = members[0][1]
    for path, ds in members:
        iop = np.array([float(v) for v in ds.get("ImageOrientationPatient", _AXIAL)])
        if not np.allclose(iop, _AXIAL, atol=1e-3):
            raise SeriesError(f"{path}: non-axial ImageOrientationPatient {iop.tolist()}")
        same = (ds.get("Rows") == first.get("Rows") and ds.get("Columns") == first.get("Columns")
                and list(ds.get("PixelSpacing", [])) == list(first.get("PixelSpacing", [])))
        if not same:
            raise SeriesError(f"{path}: Rows/Columns/PixelSpacing differ within the series")
    if "PixelSpacing" not in first:
        raise SeriesError(f"{folder}: PixelSpacing missing")
    # Sort by z, then InstanceNumber and file name, so the kept duplicate is deterministic.
    ordered = sorted(members, key=lambda m: (round(float(m[1].ImagePositionPatient[2]), 3),
                                             int(m[1].get("InstanceNumber") or 0), m[0].name))
    slices: list[Slice] = []
    rejects: list[tuple[Path, str]] = []
    sop_to_index: dict[str, int] = {}
    for path, ds in ordered:
        z = float(ds.ImagePositionPatient[2])
        sop = str(ds.get("SOPInstanceUID", ""))
        if slices and abs(z - slices[-1].z) < 1e-3:
            kept = slices[-1]
            rejects.append((path, f"duplicate z: {z:g} mm, the position of {kept.path.name} "
                                  f"(InstanceNumber {kept.instance}), which was kept"))
            sop_to_index[sop] = len(slices) - 1
            continue
        slices.append(Slice(path, sop, z, int(ds.get("InstanceNumber") or 0), layouts.get(path)))
        sop_to_index[sop] = len(slices) - 1
    row_mm, col_mm = (float(v) for v in first.PixelSpacing)
    ipp = first.ImagePositionPatient
    return SeriesHeader(
        patient_id=str(first.get("PatientID", "")),
        study_uid=str(first.get("StudyInstanceUID", "")),
        series_uid=uid,
        folder=folder,
        slices=slices,
        origin_xy=(float(ipp[0]), float(ipp[1])),
        spacing_xy=(col_mm, row_mm),
        shape_yx=(int(first.Rows), int(first.Columns)),
        slice_thickness=float(first.get("SliceThickness") or 0.0),
        rejects=rejects,
        sop_to_index=sop_to_index,
    )


def read_slice_hu(path: Path) -> np.ndarray:
    """One slice in HU (float32): slope and intercept applied, padding pixels set to air."""
    ds = pydicom.dcmread(path)
    raw = ds.pixel_array
    pad = ds.get("PixelPaddingValue")
    mask = None
    if pad is not None:
        pad = _as_stored(int(pad), ds)
        limit = ds.get("PixelPaddingRangeLimit")
        if limit is None:
            mask = raw == pad
        else:
            lo, hi = sorted((pad, _as_stored(int(limit), ds)))
            mask = (raw >= lo) & (raw <= hi)
    hu = raw.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1) + float(
        ds.get("RescaleIntercept", 0) or 0)
    if mask is not None:
        hu[mask] = AIR_HU
    return hu


def _as_stored(value: int, ds: pydicom.Dataset) -> int:
    """A padding value as the pixels store it: LIDC writes -2000 as US 63536 in signed data."""
    bits = int(ds.get("BitsStored", 16))
    if int(ds.get("PixelRepresentation", 0)) == 1 and value >= 2 ** (bits - 1):
        return value - 2 ** bits
    return value


def read_volume(header: SeriesHeader) -> np.ndarray:
    """The kept slices as a (z, y, x) float32 HU volume, z increasing."""
    vol = np.empty((len(header.slices), *header.shape_yx), np.float32)
    for k, sl in enumerate(header.slices):
        img = read_slice_hu(sl.path)
        if img.shape != header.shape_yx:
            raise SeriesError(f"{sl.path}: pixel data {img.shape} != Rows/Columns "
                              f"{header.shape_yx}")
        vol[k] = img
    return vol
