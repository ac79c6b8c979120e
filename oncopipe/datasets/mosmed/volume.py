"""One MosMedData NIfTI study -> a (1, D, H, W) array in [0, 1], in one canonical orientation.

Steps, in this order (the order matters: clipping before interpolation is what the Keras
example does, and interpolating raw HU across a bone edge would leak bright values into
soft tissue):

1. read, header first (:func:`read_nifti`): the NIfTI-1/2 header is parsed from the first
   inflated bytes (ISA-L's ``igzip``, about 2x faster than zlib for the same bytes) with
   nibabel's field layout and every field checked against the file's size and
   :mod:`oncopipe.core.limits` before the voxel buffer is allocated; the best affine is the
   sform, else the qform (the two must agree on the orientation);
2. reorient from the affine: flips and axis permutations (numpy views, no copy) to the
   canonical voxel order ``(S, P, L)`` = numpy ``(z, y, x)`` of a DICOM LPS image: slice 0 is
   the most inferior, row 0 the most anterior, column 0 the patient's right, as a radiologist
   views an axial slice. Nothing is hard-coded: an LAS, RAS or permuted file gives the same
   array;
3. clip HU to the window and scale to [0, 1];
4. resample to the target shape with separable linear interpolation on pixel centres
   (``align_corners=False``, like SimpleITK's resampler with a grid covering the same field of
   view, MONAI's trilinear ``Resize`` and OpenCV); only the source slices that an output
   slice reads are converted.

Why not ``SimpleITK.ReadImage`` + ``DICOMOrient`` + ``Resample``: it gives the same array
(to 1e-7) 1.5-3x slower, inflating with zlib and converting the whole volume;
docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import cv2
import nibabel as nib
import numpy as np
import numpy.typing as npt
from isal import isal_zlib
from nibabel import orientations
from nibabel.quaternions import quat2mat
from nibabel.volumeutils import shape_zoom_affine

from oncopipe.core import limits
from oncopipe.core.errors import DecodeError, RejectError, bad_bytes_reject

CANONICAL = ("S", "P", "L")  # nibabel axis codes of the prepared (D, H, W) axes
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20  # bytes read, and at most inflated, per step
_DEFLATE_RATIO = 1032  # deflate's largest inflated / compressed ratio
_TRAILING = _CHUNK  # bytes a .nii.gz may hold after its voxel data (none in a real study)
_HEADERS = {348: (nib.Nifti1Header, b"n+1"), 540: (nib.Nifti2Header, b"n+2")}
# NIfTI datatype codes of real-valued intensities (others: complex, RGB, float128, binary)
_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4",
           1024: "i8", 1280: "u8"}
_NOT_CT = {1: "binary", 32: "complex64", 128: "RGB24", 1536: "float128",
           1792: "complex128", 2048: "complex256", 2304: "RGBA32"}
SPACING_MM = (1e-3, 1e3)  # a voxel side outside this is no geometry of a scanner
MIN_ORTHOGONALITY = 1e-3  # |det| / product of the axis lengths: 0 = axes in one plane


class VolumeError(RejectError):
    """A file is not a usable CT volume; the message names the file and the problem."""


@dataclass(frozen=True)
class Volume:
    """A CT volume in canonical ``(z, y, x)`` voxel order with its spacing in mm."""

    hu: np.ndarray  # (D, H, W), raw dtype (int16 for MosMed), possibly a strided view
    spacing: tuple[float, float, float]  # mm along D, H, W
    source_axcodes: tuple[str, str, str]  # orientation of the file, e.g. ("L", "A", "S")


@dataclass(frozen=True)
class Header:
    """What :func:`read_nifti` needs of a NIfTI-1/2 header, every field checked."""

    shape: tuple[int, int, int]
    dtype: np.dtype
    offset: int  # vox_offset: where the voxels start in the (inflated) file
    slope: float
    inter: float
    affine: np.ndarray

    @property
    def voxel_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def end(self) -> int:
        """Bytes of the file up to the end of the voxel data."""
        return self.offset + self.voxel_bytes


def read_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Voxels (file order, e.g. (x, y, z)) and affine of a ``.nii``/``.nii.gz`` file.

    Header first: every size, offset, code and number it declares is checked (against the
    file's real size, :func:`oncopipe.core.limits.active` and what a CT volume can be) before
    the voxel buffer is allocated; a ``.nii.gz`` is inflated as a stream (every gzip member,
    never more than the header declares, up to ``max_inflated_bytes`` in all). The voxels
    are a view of that buffer unless ``scl_slope``/``scl_inter`` ask for scaling. Raises a
    :class:`~oncopipe.core.errors.RejectError` (:class:`VolumeError`, ``LimitError`` or
    ``DecodeError``) naming the file and the problem.
    """
    path = Path(path)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise VolumeError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with fh, bad_bytes_reject(path, "reading the NIfTI file"):
        size = os.fstat(fh.fileno()).st_size
        gzipped = fh.read(2) == _GZIP_MAGIC
        fh.seek(0)
        src: _Source = _Gunzip(fh, path) if gzipped else _Plain(fh)
        head = src.read(348)
        if 540 in (int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")):
            head += src.read(540 - 348)
        header = parse_header(path, head)
        if gzipped:
            limits.active().check("max_inflated_bytes", header.end, path)
            if header.end > _DEFLATE_RATIO * size + 1024:
                raise VolumeError(f"{path}: declares {header.end:,} bytes of NIfTI data, "
                                  f"more than a {size:,}-byte gzip file can hold")
        elif header.end > size:
            raise VolumeError(f"{path}: truncated voxel data ({size} of {header.end} bytes)")
        src.skip(header.offset - len(head))  # extensions (offset >= the header's size)
        data = bytearray(header.voxel_bytes)
        got = src.readinto(memoryview(data))
        if got < len(data):
            raise VolumeError(f"{path}: truncated voxel data "
                              f"({header.offset + got} of {header.end} bytes)")
        src.finish(header.end)
    voxels = np.ndarray(header.shape, header.dtype, buffer=data, order="F")
    if (header.slope, header.inter) != (1.0, 0.0):
        with np.errstate(over="ignore"):  # a slope of 1e30: inf voxels, refused downstream
            voxels = voxels * np.float32(header.slope) + np.float32(header.inter)
    return voxels, header.affine


def parse_header(path: str | Path, raw: bytes) -> Header:
    """The checked header of a NIfTI-1 or NIfTI-2 file from its first (up to 540) bytes.

    Every field is read with Python numbers (no ``np.prod`` that wraps around) and refused
    when it cannot describe a CT volume inside the file: a wrong magic, ``dim`` not 3D or not
    positive, an unknown or non-real datatype, a ``vox_offset`` inside the header, negative
    or not whole, an infinite scaling, non-finite or negative pixdims, quaternions or sform,
    and an affine that is singular or whose qform and sform disagree on the orientation.
    """
    if len(raw) < 348:
        raise VolumeError(f"{path}: too short for a NIfTI header ({len(raw)} bytes)")
    endian: Literal["<", ">"] = "<"
    sizeof_hdr = int.from_bytes(raw[:4], "little")
    if sizeof_hdr not in _HEADERS:
        endian, sizeof_hdr = ">", int.from_bytes(raw[:4], "big")
    if sizeof_hdr not in _HEADERS:
        raise VolumeError(f"{path}: not a NIfTI file (sizeof_hdr {sizeof_hdr})")
    header_class, magic = _HEADERS[sizeof_hdr]
    if len(raw) < sizeof_hdr:
        raise VolumeError(f"{path}: too short for a NIfTI header ({len(raw)} bytes)")
    hdr = np.frombuffer(raw, header_class.template_dtype.newbyteorder(endian), 1)[0]
    if bytes(hdr["magic"])[:3] != magic:
        raise VolumeError(f"{path}: not a single-file NIfTI (magic {bytes(hdr['magic'])!r})")
    shape = _shape(path, [int(d) for d in hdr["dim"]])
    limits.active().check("max_voxels", math.prod(shape), path)
    dtype = _dtype(path, int(hdr["datatype"])).newbyteorder(endian)
    offset = _whole(path, "vox_offset", float(hdr["vox_offset"]))
    if offset < sizeof_hdr:
        raise VolumeError(f"{path}: vox_offset {offset} lies inside the {sizeof_hdr}-byte "
                          "header")
    slope, inter = float(hdr["scl_slope"]), float(hdr["scl_inter"])
    if slope == 0 or math.isnan(slope):  # unset: no scaling (nibabel's reading too)
        slope, inter = 1.0, 0.0
    elif not (math.isfinite(slope) and math.isfinite(inter)):
        raise VolumeError(f"{path}: non-finite scaling (scl_slope {slope}, scl_inter {inter})")
    return Header(shape, dtype, offset, slope, inter, _affine(path, hdr, shape))


def _shape(path: str | Path, dim: list[int]) -> tuple[int, int, int]:
    if not 1 <= dim[0] <= 7:
        raise VolumeError(f"{path}: dim[0] = {dim[0]} is not a number of dimensions (1-7)")
    full = tuple(dim[1:dim[0] + 1])
    bad = [(k + 1, n) for k, n in enumerate(full) if n <= 0]
    if bad:
        raise VolumeError(f"{path}: dim[{bad[0][0]}] = {bad[0][1]} is not a positive size")
    shape = full[:3] if len(full) == 4 and full[3] == 1 else full
    if len(shape) != 3:
        raise VolumeError(f"{path}: expected a 3D volume, got shape {full}")
    return shape[0], shape[1], shape[2]


def _dtype(path: str | Path, code: int) -> np.dtype:
    if code in _DTYPES:
        return np.dtype(_DTYPES[code])
    if code in _NOT_CT:
        raise VolumeError(f"{path}: voxel type {_NOT_CT[code]} is not a real-valued CT "
                          "intensity")
    raise VolumeError(f"{path}: unknown NIfTI datatype code {code}")


def _whole(path: str | Path, name: str, value: float) -> int:
    if not math.isfinite(value) or value != int(value) or value < 0:
        raise VolumeError(f"{path}: {name} {value} is not a byte offset")
    return int(value)


def _finite(path: str | Path, name: str, values: npt.ArrayLike) -> np.ndarray:
    array = np.asarray(values, np.float64)
    if not np.isfinite(array).all():
        raise VolumeError(f"{path}: non-finite {name} {array.tolist()}")
    return array


def _affine(path: str | Path, hdr: np.void, shape: tuple[int, int, int]) -> np.ndarray:
    """The best affine (sform, else qform, else pixdims), checked before any orientation code
    uses it; qform and sform that both claim to hold must agree on the orientation."""
    pixdim = _finite(path, "pixdim", hdr["pixdim"][1:4])
    if (pixdim < 0).any():
        raise VolumeError(f"{path}: negative pixdim {pixdim.tolist()}")
    qform = sform = None
    if int(hdr["qform_code"]) > 0:
        bcd = _finite(path, "quaternion", [hdr["quatern_b"], hdr["quatern_c"],
                                           hdr["quatern_d"]])
        shift = _finite(path, "qoffset", [hdr["qoffset_x"], hdr["qoffset_y"],
                                          hdr["qoffset_z"]])
        with np.errstate(over="ignore"):  # b, c, d of 1e30: -inf, refused below
            w2 = 1.0 - float(bcd @ bcd)
        if w2 < -1e-6:
            raise VolumeError(f"{path}: quaternion {bcd.tolist()} is not a rotation")
        qfac = -1.0 if float(hdr["pixdim"][0]) < 0 else 1.0  # 0 means 1 in the standard
        qform = np.eye(4)
        qform[:3, :3] = quat2mat([math.sqrt(max(w2, 0.0)), *bcd]) * (pixdim * [1, 1, qfac])
        qform[:3, 3] = shift
        _check_affine(path, qform, "qform")
    if int(hdr["sform_code"]) > 0:
        sform = np.eye(4)
        sform[:3] = _finite(path, "sform", [hdr["srow_x"], hdr["srow_y"], hdr["srow_z"]])
        _check_affine(path, sform, "sform")
    if qform is not None and sform is not None:
        q, s = (orientations.ornt2axcodes(orientations.io_orientation(a)) for a in (qform, sform))
        if q != s:
            raise VolumeError(f"{path}: qform ({''.join(q)}) and sform ({''.join(s)}) disagree "
                              "on the orientation; one of them mirrors or turns the volume")
    if sform is not None:
        return sform
    if qform is not None:
        return qform
    base = shape_zoom_affine(shape, pixdim, True)
    _check_affine(path, base, "pixdim")
    return base


def _check_affine(path: str | Path, affine: np.ndarray, name: str = "affine") -> None:
    """Refuse an affine that orientation code cannot use: non-finite, a voxel side of no
    scanner, or axes (nearly) in one plane, which ``io_orientation`` would turn into an
    arbitrary flip or an exception."""
    if not np.isfinite(affine).all():
        raise VolumeError(f"{path}: singular or non-finite {name}")
    linear = affine[:3, :3]
    with np.errstate(over="ignore", under="ignore"):  # 1e30 mm: an inf side, refused below
        sides = np.sqrt((linear**2).sum(axis=0))
    if not ((sides >= SPACING_MM[0]) & (sides <= SPACING_MM[1])).all():
        raise VolumeError(f"{path}: singular or non-finite {name}: voxel sides "
                          f"{[round(float(s), 6) for s in sides]} mm")
    if abs(np.linalg.det(linear)) < MIN_ORTHOGONALITY * float(np.prod(sides)):
        raise VolumeError(f"{path}: singular or non-finite {name}: its axes are (nearly) "
                          "in one plane")


class _Source:
    """Bytes of the NIfTI file in order: read, skip, fill a buffer, then finish."""

    def readinto(self, out: memoryview) -> int:
        raise NotImplementedError

    def read(self, n: int) -> bytes:
        buf = bytearray(n)
        return bytes(buf[:self.readinto(memoryview(buf))])

    def skip(self, n: int) -> None:
        scratch = memoryview(bytearray(min(n, _CHUNK)))
        while n > 0:
            got = self.readinto(scratch[:min(n, _CHUNK)])
            if not got:
                return
            n -= got

    def finish(self, end: int) -> None:
        """Whatever must still be read for the file to count as whole; ``end``: the byte
        the header says the voxel data ends at."""


class _Plain(_Source):
    def __init__(self, fh: BinaryIO):
        self.fh = fh

    def readinto(self, out: memoryview) -> int:
        n = 0
        while n < len(out):
            got = self.fh.readinto(out[n:])  # type: ignore[attr-defined]
            if not got:
                break
            n += got
        return n

    def skip(self, n: int) -> None:
        self.fh.seek(n, 1)


class _Gunzip(_Source):
    """A gzip file inflated on demand: member after member (a file written in several
    members is one stream), at most :data:`_CHUNK` bytes per step, and never more than
    ``max_inflated_bytes`` in all. :meth:`finish` inflates (and drops) what is left, so a
    corrupt end or a wrong CRC is still an error, but no more than :data:`_TRAILING` bytes
    of it: a stream that goes on past the voxels its header declares is refused there, so a
    bomb behind a small header costs the bytes it declares, not the bytes it inflates to."""

    def __init__(self, fh: BinaryIO, path: Path):
        self.path = path
        self.pieces = self._inflate(fh)
        self.rest = memoryview(b"")
        self.total = 0
        self.cap = limits.active().max_inflated_bytes

    def readinto(self, out: memoryview) -> int:
        n = 0
        while n < len(out):
            if not self.rest:
                piece = next(self.pieces, None)
                if piece is None:
                    break
                self.rest = memoryview(piece)
            k = min(len(self.rest), len(out) - n)
            out[n:n + k] = self.rest[:k]
            self.rest, n = self.rest[k:], n + k
        return n

    def finish(self, end: int) -> None:
        extra = len(self.rest)
        for piece in self.pieces:
            extra += len(piece)
            if extra > _TRAILING:
                raise VolumeError(f"{self.path}: the gzip stream goes on past the {end:,} bytes "
                                  "its header declares (refused without inflating the rest)")

    def _inflate(self, fh: BinaryIO) -> Iterator[bytes]:
        member = isal_zlib.decompressobj(31)
        data = fh.read(_CHUNK)
        while True:
            if member.eof:
                data = member.unused_data + data
                if len(data) < 2:
                    data += fh.read(_CHUNK)
                if data[:2] != _GZIP_MAGIC:  # the end, or trailing bytes gzip also ignores
                    return
                member = isal_zlib.decompressobj(31)
            if not data:
                data = fh.read(_CHUNK)
            try:
                out = member.decompress(data, _CHUNK)
                if not out and not data and not member.eof:
                    out = member.flush()
            # isal's stub declares `error` an Exception instance; it is the exception class
            except isal_zlib.error as exc:  # type: ignore[misc]
                raise DecodeError(f"{self.path}: corrupt gzip stream ({exc})") from None
            if not out and not data and not member.eof:
                raise VolumeError(f"{self.path}: corrupt gzip stream (it ends before its "
                                  "last member does)")
            data = member.unconsumed_tail if not member.eof else b""
            self.total += len(out)
            if self.total > self.cap:
                limits.active().check("max_inflated_bytes", self.total, self.path)
            if out:
                yield out


def canonical(path: str | Path, voxels: np.ndarray, affine: np.ndarray) -> Volume:
    """``voxels`` reoriented to :data:`CANONICAL` using ``affine`` (flips and transposes)."""
    if min(voxels.shape) < 2:
        raise VolumeError(f"{path}: degenerate volume shape {voxels.shape}")
    _check_affine(path, affine)
    linear = affine[:3, :3]
    with bad_bytes_reject(path, "orienting the volume"):
        src = orientations.io_orientation(affine)
        transform = orientations.ornt_transform(src, orientations.axcodes2ornt(CANONICAL))
    zooms = np.sqrt((linear**2).sum(axis=0))
    spacing = tuple(float(zooms[int(src_axis)]) for src_axis in _source_axes(transform))
    return Volume(
        hu=orientations.apply_orientation(voxels, transform),
        spacing=spacing,  # type: ignore[arg-type]
        source_axcodes=tuple(orientations.ornt2axcodes(src)),  # type: ignore[arg-type]
    )


def _source_axes(transform: np.ndarray) -> list[int]:
    """For each output axis, the input axis it comes from (inverse of the permutation)."""
    out_to_in = [0, 0, 0]
    for in_axis, (out_axis, _flip) in enumerate(transform):
        out_to_in[int(out_axis)] = in_axis
    return out_to_in


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (i0, i1) and weight of i1 for each output sample, pixel-centre aligned."""
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0.0, n_in - 1)
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (pos - i0).astype(np.float32)


def window_resample(
    hu: np.ndarray, shape: tuple[int, int, int], window: tuple[float, float]
) -> np.ndarray:
    """Clip ``hu`` to ``window``, scale to [0, 1] and resample linearly to ``shape`` (float32).

    Separable linear interpolation that only converts the source slices some output slice
    reads: each is clipped, resized in plane by OpenCV (bilinear on pixel centres, no
    antialiasing; it reads only the rows and columns it needs) and scaled; each output slice
    is then a weighted sum of two such planes.
    """
    lo, hi = window
    depth, height, width = shape
    z0, z1, zw = _linear_taps(hu.shape[0], depth)
    slices = np.unique(np.concatenate((z0, z1)))
    scale = 1.0 / (hi - lo)
    planes = np.empty((len(slices), height, width), np.float32)
    for i, k in enumerate(slices):
        # read memory forwards (a reoriented view has negative strides; copying it backwards
        # costs twice as much): resize the mirrored plane and mirror the result, which is
        # the same since pixel-centre sampling is symmetric
        mirror = tuple(ax for ax in (0, 1) if hu.strides[ax + 1] < 0)
        plane = np.flip(hu[k], mirror).astype(np.float32)
        np.clip(plane, lo, hi, out=plane)
        small = cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR)
        small -= lo
        small *= scale
        planes[i] = np.flip(small, mirror)
    out = np.empty(shape, np.float32)
    k0, k1 = np.searchsorted(slices, z0), np.searchsorted(slices, z1)
    for d in range(depth):
        w = float(zw[d])
        cv2.addWeighted(planes[k0[d]], 1.0 - w, planes[k1[d]], w, 0.0, out[d])
    # weights sum to 1, so rounding can only overshoot [0, 1] by an ulp; exact zeros (air)
    # stay exact, which also keeps float16 conversion off numpy's slow subnormal path
    return np.clip(out, 0.0, 1.0, out=out)


def prepare_volume(
    path: str | Path,
    shape: tuple[int, int, int],
    window: tuple[float, float],
    dtype: npt.DTypeLike = np.float16,
) -> tuple[np.ndarray, Volume]:
    """Read, reorient, window and resample one study: ``(1, *shape)`` array and its volume."""
    vol = canonical(path, *read_nifti(path))
    if not np.issubdtype(vol.hu.dtype, np.number):
        raise VolumeError(f"{path}: non-numeric voxel type {vol.hu.dtype}")
    # NaN and +/-inf alike: the window would clip inf to a plausible value, so floats are
    # checked whole, before windowing (integer volumes, MosMed's int16, cannot hold either)
    if vol.hu.dtype.kind == "f" and not np.isfinite(vol.hu).all():
        bad = int(np.size(vol.hu) - np.count_nonzero(np.isfinite(vol.hu)))
        raise VolumeError(f"{path}: {bad} non-finite voxel value(s) (NaN or inf)")
    out = window_resample(vol.hu, shape, window)
    return to_dtype(out, dtype)[None], vol


def to_dtype(x: np.ndarray, dtype: npt.DTypeLike) -> np.ndarray:
    """[0, 1] floats to the storage dtype: uint8 means ``x / 255`` (rounded), floats as-is."""
    storage = np.dtype(dtype)
    if storage == np.uint8:
        return np.rint(x * 255.0).astype(np.uint8)
    return x.astype(storage)
