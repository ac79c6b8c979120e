"""One sample as a portable file: NIfTI for volumes, PNG for 8-bit images, NPY otherwise.

Every writer here is byte-stable (no timestamps): gzip with ``mtime=0``, PNG without
metadata, NPY as NumPy writes it.
"""

from __future__ import annotations

import gzip
import io

import nibabel as nib
import numpy as np
from PIL import Image


def suffix(array: np.ndarray, volumetric: bool) -> str:
    if volumetric:
        return ".nii.gz"
    return ".png" if array.dtype == np.uint8 and array.shape[0] in (1, 3) else ".npy"


def encode(array: np.ndarray, volumetric: bool, spacing: tuple[float, ...] | None) -> bytes:
    """The file bytes of one channel-first sample (see :func:`suffix` for the format).

    Volumes are written as NIfTI with axes (x, y, z) = (W, H, D), channels last when more
    than one, float32, and the voxel size on the diagonal of the affine (1 mm if unknown).
    """
    if volumetric:
        data = np.transpose(array.astype(np.float32), (3, 2, 1, 0))  # C,D,H,W -> W,H,D,C
        if data.shape[-1] == 1:
            data = data[..., 0]
        d, h, w = spacing if spacing else (1.0, 1.0, 1.0)
        img = nib.Nifti1Image(data, np.diag([w, h, d, 1.0]))
        img.header.set_xyzt_units("mm")
        return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)
    buf = io.BytesIO()
    if suffix(array, volumetric) == ".png":
        hwc = np.transpose(array, (1, 2, 0))
        png = Image.fromarray(hwc[..., 0] if hwc.shape[-1] == 1 else hwc)
        png.save(buf, format="PNG", compress_level=1)
    else:
        np.save(buf, array, allow_pickle=False)
    return buf.getvalue()
