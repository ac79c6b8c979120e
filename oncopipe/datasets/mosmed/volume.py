"""One MosMedData NIfTI study -> a (1, D, H, W) array in [0, 1], in one canonical orientation.

Steps, in this order (the order matters: clipping before interpolation is what the Keras
example does, and interpolating raw HU across a bone edge would leak bright values into
soft tissue):

1. read: inflate the ``.nii.gz`` (ISA-L's ``igzip``, about 2x faster than zlib for the
   same bytes), parse the header with
   nibabel and take the best affine (sform, else qform);
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

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
from isal import isal_zlib
from nibabel import orientations

from oncopipe.errors import RejectError

CANONICAL = ("S", "P", "L")  # nibabel axis codes of the prepared (D, H, W) axes
_GZIP_MAGIC = b"\x1f\x8b"


class VolumeError(RejectError):
    """A file is not a usable CT volume; the message names the file and the problem."""


@dataclass(frozen=True)
class Volume:
    """A CT volume in canonical ``(z, y, x)`` voxel order with its spacing in mm."""

    hu: np.ndarray  # (D, H, W), raw dtype (int16 for MosMed), possibly a strided view
    spacing: tuple[float, float, float]  # mm along D, H, W
    source_axcodes: tuple[str, str, str]  # orientation of the file, e.g. ("L", "A", "S")


def read_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Voxels (file order, e.g. (x, y, z)) and affine of a ``.nii``/``.nii.gz`` file.

    Only the header goes through nibabel; the voxels are a read-only view of the inflated
    bytes (no copy) unless ``scl_slope``/``scl_inter`` ask for scaling. Raises
    :class:`VolumeError` naming the file and the problem.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VolumeError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if data[:2] == _GZIP_MAGIC:
        try:
            data = isal_zlib.decompress(data, 31)  # wbits 31: gzip container
        except isal_zlib.error as exc:
            raise VolumeError(f"{path}: corrupt gzip stream ({exc})") from None
    header = _header(path, data)
    shape = header.get_data_shape()
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise VolumeError(f"{path}: expected a 3D volume, got shape {header.get_data_shape()}")
    dtype = header.get_data_dtype()
    if dtype.kind not in "biuf":  # complex (its imaginary part would be dropped), RGB, ...
        raise VolumeError(f"{path}: voxel type {dtype} is not a real-valued CT intensity")
    offset = int(header.get_data_offset())
    needed = offset + int(np.prod(shape)) * dtype.itemsize
    if needed > len(data):
        raise VolumeError(f"{path}: truncated voxel data ({len(data)} of {needed} bytes)")
    voxels = np.ndarray(shape, dtype, buffer=data, offset=offset, order="F")
    # (None, None) when unset (0 or NaN), as in MosMed; check=False above keeps nibabel from
    # "fixing" an unset slope to 1, which would cost a float copy of the whole volume
    slope, inter = header.get_slope_inter()
    slope = 1.0 if slope is None else float(slope)
    inter = 0.0 if inter is None else float(inter)
    if (slope, inter) != (1.0, 0.0):
        voxels = voxels * np.float32(slope) + np.float32(inter)
    return voxels, header.get_best_affine()


def _header(path: Path, data: bytes) -> nib.Nifti1Header | nib.Nifti2Header:
    if len(data) < 348:
        raise VolumeError(f"{path}: too short for a NIfTI header ({len(data)} bytes)")
    sizeof_hdr = int.from_bytes(data[:4], "little")
    if sizeof_hdr not in (348, 540):
        sizeof_hdr = int.from_bytes(data[:4], "big")
    header_class = {348: nib.Nifti1Header, 540: nib.Nifti2Header}.get(sizeof_hdr)
    if header_class is None:
        raise VolumeError(f"{path}: not a NIfTI file (sizeof_hdr {sizeof_hdr})")
    try:
        header = header_class.from_fileobj(io.BytesIO(data[:sizeof_hdr]), check=False)
    except Exception as exc:  # nibabel raises several types for bad headers
        raise VolumeError(f"{path}: bad NIfTI header ({exc})") from None
    if header["magic"] not in (b"n+1", b"n+2"):
        raise VolumeError(f"{path}: not a single-file NIfTI (magic {header['magic']!r})")
    return header


def canonical(path: str | Path, voxels: np.ndarray, affine: np.ndarray) -> Volume:
    """``voxels`` reoriented to :data:`CANONICAL` using ``affine`` (flips and transposes)."""
    if min(voxels.shape) < 2:
        raise VolumeError(f"{path}: degenerate volume shape {voxels.shape}")
    linear = affine[:3, :3]
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(linear)) < 1e-9:
        raise VolumeError(f"{path}: singular or non-finite affine")
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
    dtype: np.dtype | str = np.float16,
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


def to_dtype(x: np.ndarray, dtype: np.dtype | str) -> np.ndarray:
    """[0, 1] floats to the storage dtype: uint8 means ``x / 255`` (rounded), floats as-is."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return np.rint(x * 255.0).astype(np.uint8)
    return x.astype(dtype)
