"""NIfTI-1 and NIfTI-2 studies (``.nii`` and ``.nii.gz``) through MosMed's volume reader.

Seeds are small studies of the demo generator's chest phantom, written as the release writes
them (NIfTI-1, gzip) and in the other forms the reader takes: uncompressed, NIfTI-2,
big-endian, scaled unsigned voxels, a gzip of two members. The structure-aware mutator
inflates the file, writes a hostile value into one header field (offsets, dims, codes,
scaling, pixdims, quaternions, sform), sometimes cuts or extends the data, and writes it
back uncompressed or as one or more gzip members; a generic byte mutation of the gzip itself
mostly tests the inflater.
"""

from __future__ import annotations

import gzip
import random
import struct
from pathlib import Path

import nibabel as nib
import numpy as np

from fuzz.harness import Family
from oncopipe.datasets.mosmed import demo
from oncopipe.datasets.mosmed.params import DemoParams, PrepareParams
from oncopipe.datasets.mosmed.volume import prepare_volume

_FLOATS = (0.0, -0.0, 1.0, -1.0, 0.5, 1e-30, 1e30, -1e30, 3.4e38, float("inf"),
           float("-inf"), float("nan"), 352.0, 352.5, 540.0, -352.0, 2.0**31, -(2.0**31))
_INTS = (0, 1, -1, 2, 3, 4, 7, 8, 16, 255, 256, 32767, -32768, 2**31 - 1, -(2**31),
         2**40, 2**62, -(2**62), 2**63 - 1, -(2**63), 348, 352, 540, 544)


def _study(size: int = 16, slices: tuple[int, int] = (4, 6)) -> tuple[np.ndarray, np.ndarray]:
    hu, _, affine = demo.phantom(DemoParams(size=size, slices=slices), "CT-1", 255)
    return hu, affine


def _image(kind: type, data: np.ndarray, affine: np.ndarray, endian: str = "<") -> bytes:
    header = kind.header_class(endianness=endian)
    img = kind(data, affine, header)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm")
    return img.to_bytes()


def seeds() -> list[bytes]:
    hu, affine = _study()
    one, two = _image(nib.Nifti1Image, hu, affine), _image(nib.Nifti2Image, hu, affine)
    scaled = nib.Nifti1Image((hu.astype(np.int32) + 1024).astype(np.uint16), affine)
    scaled.header.set_slope_inter(1.0, -1024.0)
    half = len(one) // 2
    return [
        gzip.compress(one, mtime=0), one, gzip.compress(two, mtime=0), two,
        _image(nib.Nifti1Image, hu, affine, ">"), gzip.compress(scaled.to_bytes(), mtime=0),
        gzip.compress(one[:half], mtime=0) + gzip.compress(one[half:], mtime=0),
    ]


def _fields(raw: bytes) -> tuple[np.dtype, str] | None:
    for endian in "<>":
        sizeof = int.from_bytes(raw[:4], "little" if endian == "<" else "big")
        if sizeof == 348:
            return nib.Nifti1Header.template_dtype.newbyteorder(endian), endian
        if sizeof == 540:
            return nib.Nifti2Header.template_dtype.newbyteorder(endian), endian
    return None


def _poke(raw: bytearray, rng: random.Random) -> None:
    """One header field (or one element of an array field) set to a hostile value."""
    layout = _fields(bytes(raw[:4]))
    if layout is None:
        return
    dtype, endian = layout
    name = rng.choice(dtype.names)
    field_dtype, offset = dtype.fields[name][:2]
    base = field_dtype.base
    count = int(np.prod(field_dtype.shape)) if field_dtype.shape else 1
    at = offset + rng.randrange(count) * base.itemsize
    if base.kind == "f":
        value = rng.choice(_FLOATS) if rng.random() < 0.8 else rng.uniform(-1e6, 1e6)
        packed = np.array(value, base).tobytes()
    elif base.kind in "iu":
        value = rng.choice(_INTS) if rng.random() < 0.8 else rng.randrange(-1000, 100_000)
        packed = (value % (1 << (8 * base.itemsize))).to_bytes(
            base.itemsize, "little" if endian == "<" else "big")
    else:  # magic and text fields
        packed = bytes(rng.randrange(256) for _ in range(base.itemsize))
    raw[at:at + len(packed)] = packed[:max(0, len(raw) - at)]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Inflate, set one to three header fields hostile, maybe cut or extend, write back."""
    try:
        raw = bytearray(gzip.decompress(data)) if data[:2] == b"\x1f\x8b" else bytearray(data)
    except (OSError, EOFError):
        raw = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        _poke(raw, rng)
    roll = rng.random()
    if roll < 0.1:
        del raw[rng.randrange(len(raw) + 1):]
    elif roll < 0.2:
        raw += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    how = rng.random()
    if how < 0.4:
        return bytes(raw)
    if how < 0.8:
        return gzip.compress(bytes(raw), compresslevel=1, mtime=0)
    cuts = sorted(rng.randrange(len(raw) + 1) for _ in range(rng.randint(1, 3)))
    parts = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    out = b"".join(gzip.compress(bytes(p), compresslevel=1, mtime=0) for p in parts)
    if rng.random() < 0.2:  # a wrong CRC or size in the last trailer
        out = out[:-8] + struct.pack("<II", rng.randrange(2**32), rng.randrange(2**32))
    return out


def target(path: Path) -> object:
    """The prepare stage's call: read, reorient, window and resample at the default shape."""
    params = PrepareParams()
    return prepare_volume(path, params.shape, params.window, params.dtype)


FAMILY = Family("nifti", ".nii.gz", seeds, target, mutate)
