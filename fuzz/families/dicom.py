"""DICOM slices through the LIDC reader: header pass, slice table, pixels to HU.

Seeds are CT slices written by the LIDC demo generator (signed; unsigned with padding;
RescaleSlope 2), the same slice re-encoded as Implicit VR, deflated, RLE and JPEG 2000
lossless, the same slice with a scanner's ~200 other elements (sequences and private groups,
explicit and implicit VR), and pydicom's ``CT_small.dcm``. The target reads one file as
``lidc_lesions`` and ``prepare_lidc`` do: :func:`~oncopipe.datasets.lidc.series.read_headers`
(a rejected file raises its reason), the slice table row, then every pixel to HU through
:func:`~oncopipe.datasets.lidc.pixels.read_series`. Before that it checks the header scan
against pydicom (:func:`scan_agrees`): a file the scan reads differently is a finding, as a
crash is.

The structure-aware mutator writes hostile values into the tags the reader uses (several
values, non-finite and out-of-range numbers, empty strings) or corrupts an element's length
field.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import sys
import tempfile
import warnings
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.multival import MultiValue
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from fuzz.harness import Family, mutate_bytes
from oncopipe.core.errors import RejectError
from oncopipe.datasets.lidc import slice_table
from oncopipe.datasets.lidc.demo import write as write_demo
from oncopipe.datasets.lidc.layout import read_header, scan_header
from oncopipe.datasets.lidc.params import DemoParams
from oncopipe.datasets.lidc.pixels import read_series
from oncopipe.datasets.lidc.series import HEADER_TAGS, read_headers

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # the slice writers
from lidc_reference import add_scanner_tags

_DEMO = DemoParams(seed=3, n_patients=8, rows=64, pixel_spacing=3.0, n_slices=16,
                   nodules=(1, 1), small_nodules=(0, 0), non_nodules=(0, 0))
_PATIENTS = ("LIDC-IDRI-0001", "LIDC-IDRI-0005", "LIDC-IDRI-0006")  # signed, unsigned, slope 2


def _bytes(ds: pydicom.Dataset, syntax: str | None = None) -> bytes:
    buf = io.BytesIO()
    if syntax is not None:
        if syntax in (RLELossless, JPEG2000Lossless):
            ds.compress(syntax)
        else:
            ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@functools.cache
def _seeds() -> tuple[bytes, ...]:
    with tempfile.TemporaryDirectory() as tmp:
        write_demo(_DEMO, Path(tmp))
        files = sorted(Path(tmp).rglob("*.dcm"))
        picked = [next(p for p in files if patient in p.as_posix() and
                       pydicom.dcmread(p, stop_before_pixels=True).Modality == "CT")
                  for patient in _PATIENTS]
        seeds = [p.read_bytes() for p in picked]
        for syntax in (ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless,
                       JPEG2000Lossless):
            seeds.append(_bytes(pydicom.dcmread(picked[0]), syntax))
        for syntax in (None, ImplicitVRLittleEndian):
            ds = pydicom.dcmread(picked[1])
            add_scanner_tags(ds, 1)
            seeds.append(_bytes(ds, syntax))
    seeds.append(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    return tuple(seeds)


def target(path: Path) -> None:
    """One file as the LIDC stages read it: header pass, slice table row, HU of every pixel."""
    warnings.simplefilter("ignore")  # pydicom warns about every odd value it reads
    scan_agrees(path)
    series, rejects = read_headers([path])
    if rejects:
        raise RejectError(f"{path}: {rejects[0][1]}")
    slice_table.to_frame(series, path.parent)
    read_series(series[0]).hu(slice(None))


def scan_agrees(path: Path) -> bool:
    """Whether the header scan reads ``path`` (False: it leaves the file to pydicom). Where it
    does, pydicom must read the file too, to equal values of the same kinds and the same pixel
    layout; AssertionError otherwise."""
    size = path.stat().st_size
    with path.open("rb") as fp:
        scanned = scan_header(fp.read(1 << 16), size, HEADER_TAGS)
    if scanned is None:
        return False
    try:
        values, layout = read_header(path, HEADER_TAGS, scan=False)
    except RejectError as exc:
        raise AssertionError(f"the scan read a file pydicom rejects: {exc}") from None
    assert scanned[1] == layout, f"pixel layout {scanned[1]} != pydicom's {layout}"
    assert scanned[0].keys() == values.keys(), f"tags {sorted(scanned[0])} != {sorted(values)}"
    for name, ours in scanned[0].items():
        theirs = values[name]
        kind = (list if isinstance(theirs, MultiValue) else float if isinstance(theirs, float)
                else int if isinstance(theirs, int) else str)
        assert ours == theirs and isinstance(ours, kind), f"{name}: {ours!r} != {theirs!r}"
    return True


# Tags the reader uses, and hostile values for them (as stored: strings for IS/DS/CS/UI).
_NUMBERS = ["1\\2", "inf", "-inf", "nan", "1e400", "-1e400", "99999999999999999999",
            "-9223372036854775809", "", " ", "0", "-0", "1e-300", "abc", "0x10"]
_STRING_TAGS = {"InstanceNumber": _NUMBERS, "RescaleSlope": _NUMBERS,
                "RescaleIntercept": _NUMBERS, "SliceThickness": _NUMBERS,
                "PixelSpacing": [*_NUMBERS, "1\\1\\1", "0.7\\0.7000001"],
                "ImagePositionPatient": [*_NUMBERS, "0\\0\\1e308", "0\\0"],
                "ImageOrientationPatient": [*_NUMBERS, "1\\0\\0\\0\\1\\0\\1"],
                "NumberOfFrames": [*_NUMBERS, "2", "-1"], "Modality": ["", "MR", "CT\\CT"],
                "PhotometricInterpretation": ["RGB", "", "MONOCHROME2\\MONOCHROME1"],
                "SeriesInstanceUID": ["", "1\\2"]}
_US_TAGS = ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
            "PixelRepresentation", "SamplesPerPixel", "PixelPaddingValue")
_US_VALUES = [0, 1, 2, 7, 8, 15, 16, 17, 32, 64, 255, 4096, 32767, 32768, 65535, [1, 2]]


def _edit_value(data: bytes, rng: random.Random) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    for _ in range(rng.randint(1, 2)):
        if rng.random() < 0.5:
            name = rng.choice(sorted(_STRING_TAGS))
            value = rng.choice(_STRING_TAGS[name])
            if name in ds:
                ds[name].value = value
            else:
                setattr(ds, name, value)
        else:
            name = rng.choice(_US_TAGS)
            value = rng.choice(_US_VALUES)
            if name in ds:
                ds[name].value = value
            else:
                setattr(ds, name, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def _edit_length(data: bytes, rng: random.Random) -> bytes:
    """Overwrite the length field of an explicit-VR element found by its VR bytes."""
    buf = bytearray(data)
    spots = [i for i in range(132, len(buf) - 12)
             if buf[i + 4:i + 6] in (b"US", b"DS", b"IS", b"UI", b"CS", b"OB", b"OW", b"SQ")]
    if not spots:
        return mutate_bytes(data, rng)
    at = rng.choice(spots)
    value = rng.choice((0, 1, 3, 0x7FFF, 0xFFFF, 0x3FFFFFFF, 0x7FFFFFFF, 0xFFFFFFFF))
    if buf[at + 4:at + 6] in (b"OB", b"OW", b"SQ"):
        buf[at + 8:at + 12] = struct.pack("<I", value & 0xFFFFFFFF)
    else:
        buf[at + 6:at + 8] = struct.pack("<H", value & 0xFFFF)
    return bytes(buf)


def mutate(data: bytes, rng: random.Random) -> bytes:
    try:
        return (_edit_value if rng.random() < 0.6 else _edit_length)(data, rng)
    except Exception:  # a seed pydicom cannot rewrite: plain byte mutations instead
        return mutate_bytes(data, rng)


FAMILY = Family("dicom", ".dcm", _seeds, target, mutate)
