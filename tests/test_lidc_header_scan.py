"""The header scan (``lidc/header_scan.py``) against pydicom, the reader it stands in for.

Where the scan reads a file, pydicom must read the same values, of the same kinds, and the
same pixel layout (``fuzz.families.dicom.scan_agrees``); everywhere else the scan must leave
the file to pydicom, so that what the header pass gives, rejects and their words included,
does not depend on which of the two read it. Checked on scanner-like series in both plain
transfer syntaxes, on files the scan must decline, and on mutants of the DICOM fuzz seeds.
"""

from __future__ import annotations

import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from lidc_reference import write_series
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from fuzz.families import dicom as dicom_family
from oncopipe.core.errors import RejectError
from oncopipe.datasets.lidc.layout import read_header, scan_header
from oncopipe.datasets.lidc.series import HEADER_TAGS, read_headers

ZS = -100.0 + 2.5 * np.arange(4)


@pytest.fixture(scope="module", params=["explicit", "implicit"])
def scanner_series(request, tmp_path_factory) -> list[Path]:
    """Four 64 x 64 slices with a scanner's ~200 other elements, LIDC's US padding."""
    folder = tmp_path_factory.mktemp(request.param)
    syntax = {"implicit": {"syntax": ImplicitVRLittleEndian}, "explicit": {}}[request.param]
    return write_series(folder, ZS, rows=64, scanner_header=True, **syntax)


def _outcome(path: Path) -> tuple:
    """What the header pass gives for ``path`` as read, and as pydicom alone reads it."""
    results = []
    for scan in (True, False):
        try:
            values, layout = read_header(path, HEADER_TAGS, scan=scan)
        except RejectError as exc:
            results.append(("reject", str(exc)))
        else:
            results.append((values, layout))
    return tuple(results)


def test_the_scan_reads_a_scanner_series_as_pydicom_does(scanner_series):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert all(dicom_family.scan_agrees(path) for path in scanner_series)
    found, rejects = read_headers(scanner_series)
    assert not rejects and [len(s.slices) for s in found] == [len(ZS)]


def test_a_header_problem_is_worded_from_pydicoms_values(scanner_series, tmp_path):
    """The scan reads PixelSpacing 0.0\\0.70 (it is two numbers); the check rejects it, and the
    reason shows the values as pydicom gives them (its DS keeps the written 0.70)."""
    path = tmp_path / "slice.dcm"
    ds = pydicom.dcmread(scanner_series[0])
    ds.PixelSpacing = ["0.0", "0.70"]
    ds.save_as(path)
    assert scan_header(path.read_bytes(), path.stat().st_size, HEADER_TAGS) is not None
    _, rejects = read_headers([path])
    assert rejects == [(path, "bad header: PixelSpacing [0.0, 0.70] is not 2 finite numbers > 0")]


def _edit(ds: pydicom.Dataset, change: str) -> pydicom.Dataset | None:
    """``ds`` with one thing the scan leaves to pydicom (None: done on the bytes)."""
    values = {"empty SliceThickness": ("SliceThickness", ""),
              "two Modality values": ("Modality", ["CT", "CT"]),
              "RescaleIntercept nan": ("RescaleIntercept", "nan"),
              "InstanceNumber 1.0": ("InstanceNumber", "1.0"),
              "InstanceNumber past 2**31": ("InstanceNumber", "3000000000"),
              "non-ASCII PatientID": ("PatientID", "LIDC-IDRI-000\u00e9"),
              "Cyrillic character set": ("SpecificCharacterSet", "ISO_IR 144")}
    if change in values:
        keyword, value = values[change]
        setattr(ds, keyword, value)
        return ds
    if change == "deflated":
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    elif change == "RLE":
        ds.compress(RLELossless)
    elif change == "Modality LUT Sequence":
        lut = pydicom.Dataset()
        lut.LUTDescriptor, lut.ModalityLUTType = [2, 0, 16], "HU"
        lut.add_new(0x00283006, "US", [0, 1])  # LUTData
        ds.ModalityLUTSequence = [lut]
    else:
        return None
    return ds


DECLINED = ["empty SliceThickness", "two Modality values", "RescaleIntercept nan",
            "InstanceNumber 1.0", "InstanceNumber past 2**31", "non-ASCII PatientID",
            "Cyrillic character set", "deflated", "RLE", "Modality LUT Sequence",
            "no preamble", "elements out of order", "an item that is not an item",
            "a delimiter with a length"]


@pytest.mark.parametrize("change", DECLINED)
def test_what_the_scan_declines_pydicom_reads(scanner_series, tmp_path, change):
    path = tmp_path / "slice.dcm"
    ds = _edit(pydicom.dcmread(scanner_series[1]), change)
    if ds is not None:
        ds.save_as(path)
    else:
        shutil.copy(scanner_series[1], path)
        path.write_bytes(_edit_bytes(path.read_bytes(), change))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert scan_header(path.read_bytes(), path.stat().st_size, HEADER_TAGS) is None
        read, parsed = _outcome(path)
    assert repr(read) == repr(parsed)  # (values, layout) or a reject's words; nan != nan


def _edit_bytes(data: bytes, change: str) -> bytes:
    if change == "no preamble":
        return data[132:]
    if change == "elements out of order":  # Rows and Columns (US, one value: 10 bytes each)
        rows = data.index(b"\x28\x00\x10\x00")
        assert data[rows + 10:rows + 14] == b"\x28\x00\x11\x00"  # Columns follows Rows
        return data[:rows] + data[rows + 10:rows + 20] + data[rows:rows + 10] + data[rows + 20:]
    sequence = data.index(b"\x08\x00\x40\x11")  # ReferencedImageSequence, undefined length
    item = data.index(b"\xfe\xff\x00\xe0", sequence)  # its first item
    if change == "an item that is not an item":
        return data[:item] + b"\xfe\xff\x01\xe0" + data[item + 4:]
    end = data.index(b"\xfe\xff\xdd\xe0", item)  # its delimiter: length 0 -> 4
    return data[:end + 4] + b"\x04\x00\x00\x00" + data[end + 8:]


def test_mutants_of_the_fuzz_seeds_read_alike(tmp_path):
    """400 mutants of the DICOM fuzz family's seeds (hostile values, corrupt lengths, flipped
    bytes): wherever the scan reads one, pydicom agrees; and the scan does read some."""
    rng = random.Random(0)
    seeds = dicom_family.FAMILY.seeds()
    read = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(400):
            path = tmp_path / f"{i}.dcm"
            path.write_bytes(dicom_family.FAMILY.mutate(rng.choice(seeds), rng))
            read += dicom_family.scan_agrees(path)
    assert read >= 30
