"""MosMedData volume preparation: ours against SimpleITK, MONAI, TorchIO and the Keras example.

One 512 x 512 x 40 study (int16 HU, L, A, S, gzip: the release's format) is generated with the
demo phantom and prepared to (64, 128, 128) in [0, 1] by each method, page cache warm; twice:
noise-free (inflating is cheap, the processing dominates) and with 15 HU of image noise (like
a real study: the noise makes the low byte of every voxel incompressible, and inflating
becomes the largest cost for every method).

- ``oncopipe``: :func:`oncopipe.datasets.mosmed.volume.prepare_volume` (what prepare runs);
- ``SimpleITK``: ``ReadImage`` + ``DICOMOrient("LPS")`` + ``Clamp`` + linear ``Resample``;
- ``MONAI``: ``LoadImage`` + ``EnsureChannelFirst`` + ``ScaleIntensityRange(clip=True)`` +
  ``Resize(mode="trilinear")``;
- ``TorchIO``: ``ScalarImage`` + ``Clamp`` + ``RescaleIntensity`` + ``Resize`` (linear);
- ``Keras``: the example's nibabel ``get_fdata`` + clip/scale + ``scipy.ndimage.rotate(90)``
  + ``zoom(order=1)`` (corner-aligned, so its mean difference is larger: docs/mosmed.md);
- the floor: inflating the file alone, with zlib and with ISA-L (what oncopipe uses).

MONAI and TorchIO keep the file's voxel order; their output is mapped onto ours before the
check (a view, outside the timing). Run through ``python -m benchmarks``.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from isal import isal_zlib

from benchmarks.harness import Comparison, Method, same_array
from oncopipe.datasets.mosmed import demo, volume

WINDOW = (-1000.0, 400.0)


def ours(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    return volume.prepare_volume(path, shape, WINDOW, np.float32)[0][0]


def simpleitk(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    img = sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS")
    img = sitk.Clamp(img, img.GetPixelID(), WINDOW[0], WINDOW[1])
    size_in, spacing_in = img.GetSize(), img.GetSpacing()
    size_out = shape[::-1]
    spacing = [s * n / m for s, n, m in zip(spacing_in, size_in, size_out, strict=True)]
    # first output voxel centre: the same field of view, edges aligned
    origin = img.TransformContinuousIndexToPhysicalPoint(
        [(n / m - 1) / 2 for n, m in zip(size_in, size_out, strict=True)])
    out = sitk.Resample(img, size_out, sitk.Transform(), sitk.sitkLinear, origin, spacing,
                        img.GetDirection(), WINDOW[0], sitk.sitkFloat32)
    return (sitk.GetArrayFromImage(out) - WINDOW[0]) / (WINDOW[1] - WINDOW[0])


def las_to_ours(x: np.ndarray) -> np.ndarray:
    """(x -> left, y -> anterior, z -> superior) file order to our (S, P, L)."""
    return np.asarray(x).transpose(2, 1, 0)[:, ::-1, :]


def monai(shape: tuple[int, int, int]):
    from monai.transforms import (
        Compose,
        EnsureChannelFirst,
        LoadImage,
        Resize,
        ScaleIntensityRange,
    )

    chain = Compose([
        LoadImage(image_only=True), EnsureChannelFirst(),
        ScaleIntensityRange(WINDOW[0], WINDOW[1], 0.0, 1.0, clip=True),
        Resize(shape[::-1], mode="trilinear"),  # MONAI keeps (x, y, z): W, H, D
    ])
    return lambda path: np.asarray(chain(str(path)))[0]


def torchio(shape: tuple[int, int, int]):
    import torchio as tio

    chain = tio.Compose([
        tio.Clamp(*WINDOW), tio.RescaleIntensity((0.0, 1.0), in_min_max=WINDOW),
        tio.Resize(shape[::-1], image_interpolation="linear"),
    ])
    return lambda path: chain(tio.ScalarImage(path)).data.numpy()[0]


def keras(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    from scipy import ndimage

    vol = nib.load(path).get_fdata()
    vol[vol < WINDOW[0]] = WINDOW[0]
    vol[vol > WINDOW[1]] = WINDOW[1]
    vol = ((vol - WINDOW[0]) / (WINDOW[1] - WINDOW[0])).astype("float32")
    depth, height, width = shape
    vol = ndimage.rotate(vol, 90, reshape=False)
    vol = ndimage.zoom(vol, (height / vol.shape[0], width / vol.shape[1],
                             depth / vol.shape[-1]), order=1)
    return vol.transpose(2, 0, 1)  # rows, columns, slices -> D, H, W


def comparison(work: Path, noise: float, quick: bool) -> Comparison:
    size, slices, shape = (48, 8, (8, 24, 24)) if quick else (512, 40, (64, 128, 128))
    params = replace(demo.DemoParams(), size=size, slices=(slices, slices), noise_hu=noise)
    path = work / f"study_0940_noise{noise:g}.nii.gz"
    hu, _, affine = demo.phantom(params, "CT-2", 940)
    demo.write_nifti(path, hu, affine)
    compressed = path.read_bytes()
    exact = same_array(max_abs=1e-5)
    monai_chain, torchio_chain = monai(shape), torchio(shape)
    methods = [
        Method("oncopipe (`volume.prepare_volume`)", lambda: ours(path, shape)),
        Method("SimpleITK read + DICOMOrient + Clamp + Resample",
               lambda: simpleitk(path, shape), exact),
        Method("MONAI LoadImage + ScaleIntensityRange + Resize", lambda: monai_chain(path),
               same_array(max_abs=1e-5, view=las_to_ours)),
        Method("TorchIO ScalarImage + Clamp + RescaleIntensity + Resize",
               lambda: torchio_chain(path), same_array(max_abs=1e-5, view=las_to_ours)),
        Method("Keras example (nibabel + scipy rotate + zoom)", lambda: keras(path, shape),
               same_array(mean_abs=0.05)),
        Method("floor: gzip inflate alone (zlib)", lambda: zlib.decompress(compressed, 31)),
        Method("floor: gzip inflate alone (ISA-L)", lambda: isal_zlib.decompress(compressed, 31)),
    ]
    kind = "realistic image noise" if noise else "noise-free phantom"
    return Comparison(
        f"mosmed-noise{noise:g}",
        f"MosMed volume, {kind} ({noise:g} HU): {hu.shape} int16, "
        f"{len(compressed) / 1e6:.1f} MB gzip -> {shape} float32 in [0, 1]",
        "volume", 1, methods)


def comparisons(work: Path, quick: bool) -> list[Comparison]:
    return [comparison(work, 0.0, quick), comparison(work, 15.0, quick)]
