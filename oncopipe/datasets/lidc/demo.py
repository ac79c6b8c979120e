"""Synthetic LIDC-IDRI: CT series as single-slice DICOM files plus reader XML, in the real layouts.

Each series is a chest phantom (air, soft-tissue body, two lungs, noise) with lesions drawn
where the XML says they are, true to their kind so a model can learn them from 64 x 64 crops:

- nodules >= 3 mm: solid ellipsoids of 5-22 mm at -20..60 HU (lobulated when large), contoured
  slice by slice by 1-4 of the four readers, with all nine ratings (malignancy grows with size);
- nodules < 3 mm: dense 2.5-3 mm dots (calcified-like, 250-400 HU), one point per reader;
- non-nodules: thin elongated scars at -150..-50 HU, one ``locus`` per reader.

Every quirk of docs/data.md a loader must survive appears at least once, on fixed
patients (numbers are 1-based patient indices):

1. classic UID folders; default namespace; an empty ``characteristics``; an ``inclusion``
   FALSE hole; a nodule cut by the top of the volume.
2. new descriptive layout; two CT series, the second with SliceThickness 2.5 but a 2.0 mm step;
   XML without namespace.
3. old descriptive layout with file names not in z order; prefixed namespace; an roi whose
   SOP UID is not in the series (matched by z).
4. an extra DX study (with an ``IdriReadMessage`` XML) to skip.
5. a duplicate-z slice; unsigned pixels with padding 0.
6. a missing slice; RescaleSlope 2.
7. 3 mm slices (outside the LUNA16 selection).

Deterministic: one ``numpy`` generator seeded from ``DemoParams.seed``, no timestamps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from oncopipe.core.config import DatasetConfig
from oncopipe.datasets.lidc.params import DemoParams

UID_ROOT = "1.3.6.1.4.1.14519.5.2.1.6279.6001."
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
NIH = "http://www.nih.gov"
MANIFEST = "manifest-1600000000000"
RATINGS = ("subtlety", "internalStructure", "calcification", "sphericity", "margin",
           "lobulation", "spiculation", "texture", "malignancy")
NODULE_ID_STYLES = ("{n}", "Nodule {n:03d}", "IL057_{r}", "MI014_{r}")


@dataclass
class _Lesion:
    kind: str  # nodule | small_nodule | non_nodule
    x: float  # centre, patient mm (LPS)
    y: float
    z: float
    size: float  # diameter (nodules) or length (non-nodules), mm
    hu: float
    radii: tuple[float, float, float] = (0.0, 0.0, 0.0)  # ellipsoid semi-axes (x, y, z) mm
    angle: float = 0.0  # in-plane direction of a non-nodule
    readers: list[int] = field(default_factory=list)


@dataclass
class _Series:
    patient: int
    pid: str
    study_uid: str
    series_uid: str
    n_slices: int
    step: float
    thickness: float
    origin: tuple[float, float, float]  # x0, y0 (pixel 0,0) and z of the top slice
    sop_uids: list[str]
    lesions: list[_Lesion] = field(default_factory=list)
    storage: str = "int16"  # int16 (padding -2000 as US) | uint16 (padding 0) | slope2
    missing: int = -1  # index of a slice left out
    duplicate: int = -1  # index of a slice written twice
    namespace: str = "default"  # default | none | prefixed
    bad_sop: bool = False
    hole: bool = False
    empty_characteristics: bool = False

    def z(self, k: int) -> float:
        return self.origin[2] - k * self.step


def write_demo(cfg: DatasetConfig, out_dir: Path) -> None:
    """The demo collection of ``cfg.demo`` into ``out_dir`` (the dataset interface)."""
    write(cfg.demo, out_dir)


def write(params: DemoParams, out_dir: Path) -> None:
    """Write the synthetic collection into ``out_dir`` (see the module docstring)."""
    rng = np.random.default_rng(params.seed)
    uids = _UidMaker(rng)
    for patient in range(1, params.n_patients + 1):
        pid = f"LIDC-IDRI-{patient:04d}"
        study_uid = uids.make()
        n_series = 2 if patient == 2 else 1
        for s in range(n_series):
            series = _plan_series(params, rng, uids, patient, pid, study_uid, second=s == 1)
            folder = out_dir / _series_folder(patient, pid, study_uid, series.series_uid)
            _write_series(params, rng, series, folder)
            _write_xml(params, rng, series, folder)
        if patient == 4:
            _write_dx_study(rng, uids, out_dir, pid)
    _write_metadata_csv(out_dir)


# --------------------------------------------------------------------------------------------
# Planning: geometry, quirks and lesions of one series.
# --------------------------------------------------------------------------------------------


class _UidMaker:
    """Unique, seeded DICOM UIDs in the LIDC root (no leading zeros, 30 digits after it)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.seen: set[str] = set()

    def make(self) -> str:
        while True:
            digits = self.rng.integers(0, 10, 29)
            uid = UID_ROOT + str(int(self.rng.integers(1, 10))) + "".join(map(str, digits))
            if uid not in self.seen:
                self.seen.add(uid)
                return uid


def _plan_series(params: DemoParams, rng: np.random.Generator, uids: _UidMaker, patient: int,
                 pid: str, study_uid: str, second: bool) -> _Series:
    step, thickness = params.slice_step, params.slice_step
    if second:
        step, thickness = 2.0, 2.5
    if patient == 7:
        step, thickness = 3.0, 3.0
    half = params.rows * params.pixel_spacing / 2
    origin = (-half + float(rng.uniform(-5, 5)), -half + float(rng.uniform(-5, 5)),
              float(rng.uniform(-120, 60)))
    series = _Series(patient=patient, pid=pid, study_uid=study_uid, series_uid=uids.make(),
                     n_slices=params.n_slices, step=step, thickness=thickness, origin=origin,
                     sop_uids=[uids.make() for _ in range(params.n_slices + 1)])
    if patient == 1:
        series.hole = series.empty_characteristics = True
    if patient == 2 and second:
        series.namespace = "none"
    if patient == 3:
        series.namespace, series.bad_sop = "prefixed", True
    if patient == 5:
        series.storage, series.duplicate = "uint16", params.n_slices // 2
    if patient == 6:
        series.storage, series.missing = "slope2", params.n_slices - 3
    series.lesions = _plan_lesions(params, rng, series, border=patient == 1)
    return series


def _plan_lesions(params: DemoParams, rng: np.random.Generator, series: _Series,
                  border: bool) -> list[_Lesion]:
    lesions: list[_Lesion] = []
    counts = {k: int(rng.integers(lo, hi + 1)) for k, (lo, hi) in
              (("nodule", params.nodules), ("small_nodule", params.small_nodules),
               ("non_nodule", params.non_nodules))}
    for kind in ("nodule", "small_nodule", "non_nodule"):
        for i in range(counts[kind]):
            at_border = border and kind == "nodule" and i == 0
            lesion = _place(params, rng, series, kind, lesions, at_border)
            if lesion is not None:
                lesions.append(lesion)
    return lesions


def _lungs(params: DemoParams) -> list[tuple[float, float, float, float]]:
    """Two lungs as elliptic cylinders: (centre col, centre row, semi-axis col, row) in px."""
    n = params.rows
    return [(n * 0.5 + sgn * 0.2 * n, n * 0.48, 0.15 * n, 0.25 * n) for sgn in (-1, 1)]


def _place(params: DemoParams, rng: np.random.Generator, series: _Series, kind: str,
           others: list[_Lesion], at_border: bool) -> _Lesion | None:
    ps = params.pixel_spacing
    if kind == "nodule":
        size = float(rng.uniform(5.0, 22.0))
        hu = float(rng.uniform(-20, 60))
        extent = size / 2
    elif kind == "small_nodule":
        size, hu = float(rng.uniform(2.5, 3.0)), float(rng.uniform(250, 400))
        extent = size / 2
    else:
        size, hu = float(rng.uniform(10.0, 18.0)), float(rng.uniform(-150, -50))
        extent = size / 2
    for _ in range(500):
        cc, cr, ac, ar = _lungs(params)[int(rng.integers(0, 2))]
        margin = extent / ps + 2
        if ac <= margin or ar <= margin:
            return None
        t, rad = rng.uniform(0, 2 * math.pi), math.sqrt(rng.uniform(0, 1))
        col = cc + (ac - margin) * rad * math.cos(t)
        row = cr + (ar - margin) * rad * math.sin(t)
        if at_border:
            k = 1.0
        else:
            lo = extent / series.step + 2.5
            k = float(rng.uniform(lo, series.n_slices - 1 - lo))
        if kind != "nodule":
            k = float(round(k))  # point marks sit on a slice, as readers place them
        x, y = series.origin[0] + col * ps, series.origin[1] + row * ps
        z = series.z(0) - k * series.step
        if all(math.dist((x, y, z), (o.x, o.y, o.z)) > extent + o.size / 2 + 10 for o in others):
            break
    else:
        return None
    lesion = _Lesion(kind=kind, x=x, y=y, z=z, size=size, hu=hu,
                     angle=float(rng.uniform(0, math.pi)))
    if kind == "nodule":
        r = size / 2
        a, b, c = (float(r * rng.uniform(0.9, 1.1)) for _ in range(3))
        lesion.radii = (a, b, c)
    n_readers = int(rng.choice([1, 2, 3, 4], p=[0.1, 0.15, 0.25, 0.5]))
    lesion.readers = sorted(int(v) for v in rng.choice(4, n_readers, replace=False))
    return lesion


# --------------------------------------------------------------------------------------------
# Pixels.
# --------------------------------------------------------------------------------------------


def _render(params: DemoParams, rng: np.random.Generator, series: _Series) -> np.ndarray:
    """HU volume (slice, row, col), slice 0 at the top (largest z)."""
    n, ps = params.rows, params.pixel_spacing
    rows, cols = np.mgrid[0:n, 0:n].astype(np.float32)
    plane = np.full((n, n), -1000.0, np.float32)
    body = ((cols - n / 2) / (0.46 * n)) ** 2 + ((rows - n / 2) / (0.36 * n)) ** 2 <= 1
    plane[body] = 40.0
    for cc, cr, ac, ar in _lungs(params):
        plane[((cols - cc) / ac) ** 2 + ((rows - cr) / ar) ** 2 <= 1] = -850.0
    vol = np.repeat(plane[None], series.n_slices, axis=0)
    vol += rng.normal(0, params.noise_hu, vol.shape).astype(np.float32)
    zs = np.array([series.z(k) for k in range(series.n_slices)], np.float32)
    xs = series.origin[0] + np.arange(n, dtype=np.float32) * ps
    ys = series.origin[1] + np.arange(n, dtype=np.float32) * ps
    for lesion in series.lesions:
        _draw(vol, lesion, xs, ys, zs)
    scan_circle = (cols - (n - 1) / 2) ** 2 + (rows - (n - 1) / 2) ** 2 > (n / 2) ** 2
    vol[:, scan_circle] = np.nan  # padding, written as the series' padding value
    return vol


def _draw(vol: np.ndarray, lesion: _Lesion, xs: np.ndarray, ys: np.ndarray,
          zs: np.ndarray) -> None:
    """Blend ``lesion`` into ``vol`` with a 1 mm soft edge (partial volume), in its box only."""
    reach = lesion.size / 2 + 3.0
    kz = np.flatnonzero(np.abs(zs - lesion.z) <= reach)
    ky = np.flatnonzero(np.abs(ys - lesion.y) <= reach)
    kx = np.flatnonzero(np.abs(xs - lesion.x) <= reach)
    if not (kz.size and ky.size and kx.size):
        return
    box = np.ix_(kz, ky, kx)
    z, y, x = np.meshgrid(zs[kz], ys[ky], xs[kx], indexing="ij")
    if lesion.kind == "non_nodule":
        ux, uy = math.cos(lesion.angle), math.sin(lesion.angle)
        t = np.clip((x - lesion.x) * ux + (y - lesion.y) * uy, -lesion.size / 2, lesion.size / 2)
        dist = np.sqrt((x - lesion.x - t * ux) ** 2 + (y - lesion.y - t * uy) ** 2
                       + ((z - lesion.z) * 1.5) ** 2)
        weight = np.clip(1.3 - dist + 0.5, 0, 1)
    else:
        if lesion.kind == "nodule":
            rx, ry, rz = lesion.radii
        else:
            rx = ry = rz = lesion.size / 2
        d = np.sqrt(((x - lesion.x) / rx) ** 2 + ((y - lesion.y) / ry) ** 2
                    + ((z - lesion.z) / rz) ** 2)
        if lesion.kind == "nodule" and lesion.size >= 13:  # lobulated, like suspicious nodules
            theta = np.arctan2(y - lesion.y, x - lesion.x)
            d = d / (1 + 0.12 * np.sin(5 * theta + lesion.angle))
        weight = np.clip((1 - d) * min(rx, ry, rz) + 0.5, 0, 1)
    sub = vol[box]
    vol[box] = sub * (1 - weight) + lesion.hu * weight


def _stored(hu: np.ndarray, storage: str) -> tuple[np.ndarray, dict]:
    """HU (NaN = padding) -> stored pixels and the rescale/padding tags that decode them."""
    pad = np.isnan(hu)
    hu = np.where(pad, -1000, hu)
    if storage == "uint16":
        raw = np.clip(np.rint(hu + 1024), 1, 65535).astype(np.uint16)
        raw[pad] = 0
        return raw, {"slope": 1, "intercept": -1024, "pad": 0, "signed": False}
    if storage == "slope2":
        raw = np.clip(np.rint((hu + 2048) / 2), -32768, 32767).astype(np.int16)
        raw[pad] = -2000
        return raw, {"slope": 2, "intercept": -2048, "pad": 63536, "signed": True}
    raw = np.clip(np.rint(hu + 1024), -32768, 32767).astype(np.int16)
    raw[pad] = -2000
    return raw, {"slope": 1, "intercept": -1024, "pad": 63536, "signed": True}


# --------------------------------------------------------------------------------------------
# Files: DICOM, XML, folders.
# --------------------------------------------------------------------------------------------


def _series_folder(patient: int, pid: str, study_uid: str, series_uid: str) -> Path:
    """The three TCIA layouts, by patient: classic UIDs, new descriptive, old descriptive."""
    if patient in (2, 5) or (patient > 7 and patient % 2 == 0):
        return (Path(MANIFEST) / "LIDC-IDRI" / pid / f"01-01-2000-NA-NA-{study_uid[-5:]}"
                / f"3000566.000000-NA-{series_uid[-5:]}")
    if patient == 3:
        return Path(pid) / f"01-01-2000-{study_uid[-5:]}" / f"3000566-{series_uid[-5:]}"
    return Path("LIDC-IDRI") / pid / study_uid / series_uid


def _file_names(series: _Series, rng: np.random.Generator, folder: Path) -> list[str]:
    """One name per written slice (instance order); old descriptive names are shuffled."""
    n = series.n_slices + (1 if series.duplicate >= 0 else 0)
    if "manifest-" in str(folder):
        return [f"1-{i + 1:03d}.dcm" for i in range(n)]
    if series.patient == 3:
        return [f"{i + 1:06d}.dcm" for i in rng.permutation(n)]
    return [f"{i + 1:06d}.dcm" for i in range(n)]


def _write_series(params: DemoParams, rng: np.random.Generator, series: _Series,
                  folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    vol = _render(params, rng, series)
    slices = list(range(series.n_slices))
    if series.duplicate >= 0:
        slices.append(series.duplicate)
    names = _file_names(series, rng, folder)
    for instance, (k, name) in enumerate(zip(slices, names, strict=True), start=1):
        if k == series.missing:
            continue
        raw, tags = _stored(vol[k], series.storage)
        ds = _ct_header(params, series, k, instance, tags)
        ds.PixelData = raw.tobytes()
        pydicom.dcmwrite(folder / name, ds, enforce_file_format=True)


def _file_dataset(sop_class: str, sop_uid: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(UID_ROOT + "1")
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    return ds


def _ct_header(params: DemoParams, series: _Series, k: int, instance: int,
               tags: dict) -> FileDataset:
    sop = series.sop_uids[k] if instance <= series.n_slices else series.sop_uids[-1]
    ds = _file_dataset(CT_STORAGE, sop)
    ds.PatientID, ds.PatientName, ds.PatientIdentityRemoved = series.pid, "", "YES"
    ds.StudyDate, ds.Modality, ds.Manufacturer = "20000101", "CT", "GE MEDICAL SYSTEMS"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = series.study_uid, series.series_uid
    ds.FrameOfReferenceUID = series.study_uid
    ds.SeriesNumber, ds.InstanceNumber = 3000566, instance
    x0, y0, _ = series.origin
    z = round(series.z(k), 3)
    ds.ImagePositionPatient = [round(x0, 3), round(y0, 3), z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = z
    ds.PixelSpacing = [params.pixel_spacing, params.pixel_spacing]
    ds.SliceThickness = series.thickness
    ds.Rows = ds.Columns = params.rows
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if tags["signed"] else 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = tags["intercept"], tags["slope"], "HU"
    ds.add(DataElement(0x00280120, "US", tags["pad"]))  # PixelPaddingValue, US as in LIDC
    return ds


def _write_dx_study(rng: np.random.Generator, uids: _UidMaker, out_dir: Path, pid: str) -> None:
    """A chest radiograph study beside the CT, as some LIDC patients have: to be skipped."""
    study_uid, series_uid = uids.make(), uids.make()
    folder = out_dir / "LIDC-IDRI" / pid / study_uid / series_uid
    folder.mkdir(parents=True)
    ds = _file_dataset(DX_STORAGE, uids.make())
    ds.PatientID, ds.PatientName, ds.Modality = pid, "", "DX"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study_uid, series_uid, 1
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = rng.integers(0, 4096, (64, 64)).astype(np.uint16).tobytes()
    pydicom.dcmwrite(folder / "000001.dcm", ds, enforce_file_format=True)
    (folder / "071.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<IdriReadMessage xmlns="{NIH}">\n  <ResponseHeader>\n'
        f"    <SeriesInstanceUid>{series_uid}</SeriesInstanceUid>\n"
        "  </ResponseHeader>\n</IdriReadMessage>\n", encoding="utf-8")


def _write_metadata_csv(out_dir: Path) -> None:
    """The NBIA manifest's metadata.csv (a value with commas, quoted as NBIA does)."""
    folder = out_dir / MANIFEST
    if not folder.is_dir():
        return
    (folder / "metadata.csv").write_text(
        "Series UID,Collection,3rd Party Analysis,Data Description URI,Subject ID,"
        "Study Description,Modality,Number of Images,File Location\n"
        '"",LIDC-IDRI,NO,"https://doi.org/10.7937/K9/TCIA.2015.LO9QL9SX, see also",,,CT,0,"."\n',
        encoding="utf-8")


class _Xml:
    """A tiny XML writer that can use a default, a prefixed or no namespace."""

    def __init__(self, style: str):
        self.prefix = "nih:" if style == "prefixed" else ""
        self.style = style
        self.lines: list[str] = ['<?xml version="1.0" encoding="UTF-8"?>']

    def open(self, tag: str, depth: int, root: bool = False) -> None:
        attrs = ""
        if root and self.style == "default":
            attrs = f' xmlns="{NIH}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        elif root and self.style == "prefixed":
            attrs = f' xmlns:nih="{NIH}"'
        self.lines.append(f"{'  ' * depth}<{self.prefix}{tag}{attrs}>")

    def close(self, tag: str, depth: int) -> None:
        self.lines.append(f"{'  ' * depth}</{self.prefix}{tag}>")

    def leaf(self, tag: str, value: object, depth: int) -> None:
        self.lines.append(f"{'  ' * depth}<{self.prefix}{tag}>{value}</{self.prefix}{tag}>")

    def empty(self, tag: str, depth: int) -> None:
        self.lines.append(f"{'  ' * depth}<{self.prefix}{tag}/>")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _write_xml(params: DemoParams, rng: np.random.Generator, series: _Series,
               folder: Path) -> None:
    x = _Xml(series.namespace)
    x.open("LidcReadMessage", 0, root=True)
    x.open("ResponseHeader", 1)
    for tag, value in (("Version", "1.8.1"), ("MessageId", int(rng.integers(100_000, 1_000_000))),
                       ("DateRequest", "2000-01-01"), ("TimeRequest", "00:00:00"),
                       ("RequestingSite", "removed"), ("ServicingSite", "removed"),
                       ("TaskDescription", "Second unblinded read"), ("CtImageFile", "removed"),
                       ("SeriesInstanceUid", series.series_uid), ("DateService", "2000-01-01"),
                       ("TimeService", "00:00:00"), ("ResponseDescription", "1 - Reading complete"),
                       ("StudyInstanceUID", series.study_uid)):
        x.leaf(tag, value, 2)
    x.close("ResponseHeader", 1)
    state = {"hole": series.hole, "empty": series.empty_characteristics,
             "bad_sop": series.bad_sop}
    for reader in range(4):
        x.open("readingSession", 1)
        x.leaf("annotationVersion", "3.12", 2)
        x.leaf("servicingRadiologistID", f"anon-{int(rng.integers(100, 999))}", 2)
        style = NODULE_ID_STYLES[(series.patient + reader) % len(NODULE_ID_STYLES)]
        marks = [le for le in series.lesions if reader in le.readers]
        for n, lesion in enumerate(marks, start=1):
            nid = style.format(n=n, r=int(rng.integers(10000, 999999)))
            if lesion.kind == "non_nodule":
                _non_nodule_xml(params, rng, x, series, lesion, nid, state)
            else:
                _nodule_xml(params, rng, x, series, lesion, nid, state)
        x.close("readingSession", 1)
    x.close("LidcReadMessage", 0)
    (folder / f"{int(rng.integers(1, 999)):03d}.xml").write_text(x.text(), encoding="utf-8")


def _pixel(params: DemoParams, series: _Series, xmm: float, ymm: float) -> tuple[float, float]:
    return ((xmm - series.origin[0]) / params.pixel_spacing,
            (ymm - series.origin[1]) / params.pixel_spacing)


def _sop(series: _Series, k: int, state: dict) -> str:
    """Slice ``k``'s SOP UID; once per series with ``bad_sop``, one of no slice (match by z)."""
    sop = series.sop_uids[k]
    if state["bad_sop"]:
        sop, state["bad_sop"] = sop[:-4] + "9999", False
    return sop


def _roi(x: _Xml, series: _Series, k: int, inclusion: bool, points: list[tuple[int, int]],
         state: dict) -> None:
    x.open("roi", 3)
    x.leaf("imageZposition", f"{series.z(k):.3f}", 4)
    x.leaf("imageSOP_UID", _sop(series, k, state), 4)
    x.leaf("inclusion", "TRUE" if inclusion else "FALSE", 4)
    for col, row in points:
        x.open("edgeMap", 4)
        x.leaf("xCoord", col, 5)
        x.leaf("yCoord", row, 5)
        x.close("edgeMap", 4)
    x.close("roi", 3)


def _nodule_xml(params: DemoParams, rng: np.random.Generator, x: _Xml, series: _Series,
                lesion: _Lesion, nid: str, state: dict) -> None:
    x.open("unblindedReadNodule", 2)
    x.leaf("noduleID", nid, 3)
    if lesion.kind == "small_nodule":
        col, row = _pixel(params, series, lesion.x, lesion.y)
        k = round((series.z(0) - lesion.z) / series.step)
        jitter = rng.integers(-1, 2, 2)
        _roi(x, series, k, True, [(round(col) + int(jitter[0]), round(row) + int(jitter[1]))],
             state)
        x.close("unblindedReadNodule", 2)
        return
    if state["empty"]:
        x.empty("characteristics", 3)
        state["empty"] = False
    else:
        x.open("characteristics", 3)
        for name, value in zip(RATINGS, _ratings(rng, lesion.size), strict=True):
            x.leaf(name, value, 4)
        x.close("characteristics", 3)
    scale = float(rng.uniform(0.92, 1.08))
    dcol, drow = rng.uniform(-0.5, 0.5, 2)
    col, row = _pixel(params, series, lesion.x, lesion.y)
    rx, ry, rz = lesion.radii
    ks = [k for k in range(series.n_slices) if abs(series.z(k) - lesion.z) < rz]
    for k in ks:
        f = math.sqrt(max(0.0, 1 - ((series.z(k) - lesion.z) / rz) ** 2))
        a = rx * f * scale / params.pixel_spacing + 0.5
        b = ry * f * scale / params.pixel_spacing + 0.5
        pts = _ellipse(col + dcol, row + drow, a, b)
        _roi(x, series, k, True, pts, state)
        if state["hole"] and len(pts) > 12 and k == ks[len(ks) // 2]:
            _roi(x, series, k, False, _ellipse(col, row, a * 0.3 + 1, b * 0.3 + 1), state)
            state["hole"] = False
    x.close("unblindedReadNodule", 2)


def _non_nodule_xml(params: DemoParams, rng: np.random.Generator, x: _Xml, series: _Series,
                    lesion: _Lesion, nid: str, state: dict) -> None:
    col, row = _pixel(params, series, lesion.x, lesion.y)
    k = round((series.z(0) - lesion.z) / series.step)
    jitter = rng.integers(-1, 2, 2)
    x.open("nonNodule", 2)
    x.leaf("nonNoduleID", nid, 3)
    x.leaf("imageZposition", f"{series.z(k):.3f}", 3)
    x.leaf("imageSOP_UID", _sop(series, k, state), 3)
    x.open("locus", 3)
    x.leaf("xCoord", round(col) + int(jitter[0]), 4)
    x.leaf("yCoord", round(row) + int(jitter[1]), 4)
    x.close("locus", 3)
    x.close("nonNodule", 2)


def _ellipse(col: float, row: float, a: float, b: float) -> list[tuple[int, int]]:
    """A closed integer contour (first point = last) around an ellipse, as readers drew them."""
    n = max(8, int(2 * math.pi * max(a, b)))
    pts: list[tuple[int, int]] = []
    for i in range(n):
        t = 2 * math.pi * i / n
        p = (round(col + a * math.cos(t)), round(row + b * math.sin(t)))
        if not pts or p != pts[-1]:
            pts.append(p)
    if len(set(pts)) == 1:
        return pts[:1]  # a stray single-point roi, as real readers left
    pts.append(pts[0])
    return pts


def _ratings(rng: np.random.Generator, diameter: float) -> list[int]:
    """The nine ratings; malignancy and spiculation grow with size, so they are learnable."""
    if diameter < 9:
        malignancy, spiculation = int(rng.choice([1, 2, 2, 3])), int(rng.integers(1, 3))
    elif diameter < 13:
        malignancy, spiculation = int(rng.integers(2, 5)), int(rng.integers(1, 4))
    else:
        malignancy, spiculation = int(rng.choice([3, 4, 5, 5])), int(rng.integers(3, 6))
    return [min(5, 2 + int(diameter // 6)), 1, int(rng.choice([3, 6, 6, 6])),
            int(rng.integers(3, 6)), int(rng.integers(2, 6)), int(rng.integers(1, 4)),
            spiculation, 5, malignancy]
