"""MosMedData volume preparation: ours against SimpleITK, MONAI and the Keras example, side by side.

One 512 x 512 x 40 study (int16 HU, L, A, S, gzip: the release's format) is generated with the
demo phantom (``--noise`` HU of image noise; real CT noise makes gzip the dominant cost) and
prepared to (64, 128, 128) in [0, 1] by each method, in one process, page cache warm:

- ``oncopipe``: :func:`oncopipe.datasets.mosmed.volume.prepare_volume` (what prepare runs);
- ``SimpleITK``: ``ReadImage`` + ``DICOMOrient("LPS")`` + ``Clamp`` + linear ``Resample``;
- ``MONAI``: ``LoadImage`` + ``EnsureChannelFirst`` + ``ScaleIntensityRange(clip=True)`` +
  ``Resize(mode="trilinear")`` (skipped, with a message, when MONAI is not installed);
- ``Keras``: the example's nibabel ``get_fdata`` + clip/scale + ``scipy.ndimage.rotate(90)`` +
  ``zoom(order=1)``;
- the gzip floor: inflating the file alone with zlib, and with ISA-L (what oncopipe uses).

Each row gives the median and best of ``--repeats`` timed runs after a warm-up, the speed-up
of ``oncopipe`` over it, and the largest difference from our array once the method's own
axis order is mapped onto ours (MONAI keeps the file's voxel order; Keras's rotation turns
the L, A, S file into our orientation). Usage (figures in docs/benchmarks.md)::

    python benchmarks/mosmed_prepare.py [--repeats 7] [--noise 15]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from isal import isal_zlib

from oncopipe.datasets.mosmed import demo, volume

SHAPE = (64, 128, 128)  # D, H, W
WINDOW = (-1000.0, 400.0)


def ours(path: Path) -> np.ndarray:
    return volume.prepare_volume(path, SHAPE, WINDOW, np.float32)[0][0]


def simpleitk(path: Path) -> np.ndarray:
    img = sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS")
    img = sitk.Clamp(img, img.GetPixelID(), WINDOW[0], WINDOW[1])
    size_in, spacing_in = img.GetSize(), img.GetSpacing()
    size_out = SHAPE[::-1]
    spacing = [s * n / m for s, n, m in zip(spacing_in, size_in, size_out, strict=True)]
    # first output voxel centre: the same field of view, edges aligned
    origin = img.TransformContinuousIndexToPhysicalPoint(
        [(n / m - 1) / 2 for n, m in zip(size_in, size_out, strict=True)])
    out = sitk.Resample(img, size_out, sitk.Transform(), sitk.sitkLinear, origin, spacing,
                        img.GetDirection(), WINDOW[0], sitk.sitkFloat32)
    return (sitk.GetArrayFromImage(out) - WINDOW[0]) / (WINDOW[1] - WINDOW[0])


def monai_chain() -> Callable[[Path], np.ndarray]:
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
        Resize(SHAPE[::-1], mode="trilinear"),  # MONAI keeps (x, y, z): W, H, D
    ])

    def run(path: Path) -> np.ndarray:
        x = np.asarray(chain(str(path)))[0]  # (x->left, y->anterior, z->superior)
        return x.transpose(2, 1, 0)[:, ::-1, :]  # to (S, P, L)

    return run


def keras(path: Path) -> np.ndarray:
    from scipy import ndimage

    vol = nib.load(path).get_fdata()
    vol[vol < WINDOW[0]] = WINDOW[0]
    vol[vol > WINDOW[1]] = WINDOW[1]
    vol = ((vol - WINDOW[0]) / (WINDOW[1] - WINDOW[0])).astype("float32")
    depth, height, width = SHAPE
    vol = ndimage.rotate(vol, 90, reshape=False)
    vol = ndimage.zoom(vol, (height / vol.shape[0], width / vol.shape[1],
                             depth / vol.shape[-1]), order=1)
    return vol.transpose(2, 0, 1)  # rows, columns, slices -> D, H, W


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    result = fn()  # warm-up (imports, page cache)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--keras-repeats", type=int, default=3, help="the Keras way is slow")
    ap.add_argument("--noise", type=float, default=15.0, help="image noise, HU")
    ap.add_argument("--slices", type=int, default=40)
    args = ap.parse_args()

    params = replace(demo.DemoParams(), size=512, slices=(args.slices, args.slices),
                     noise_hu=args.noise)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "study_0940.nii.gz"
        hu, _, affine = demo.phantom(params, "CT-2", 940)
        demo.write_nifti(path, hu, affine)
        compressed = path.read_bytes()
        print(f"volume {hu.shape} int16, {len(compressed) / 1e6:.1f} MB gzip "
              f"({hu.nbytes / 1e6:.1f} MB raw), noise {args.noise} HU")

        methods: list[tuple[str, Callable[[Path], np.ndarray] | None, int]] = [
            ("oncopipe", ours, args.repeats),
            ("SimpleITK read + DICOMOrient + Resample", simpleitk, args.repeats),
        ]
        if importlib.util.find_spec("monai") is None:
            print("MONAI is not installed (pip install monai): its row is skipped")
        else:
            methods.append(("MONAI LoadImage + ScaleIntensityRange + Resize", monai_chain(),
                            args.repeats))
        methods.append(("Keras example (nibabel + scipy rotate + zoom)", keras,
                        args.keras_repeats))

        rows = []
        reference = None
        for name, fn, repeats in methods:
            med, best, arr = timed(lambda fn=fn: fn(path), repeats)
            if reference is None:
                reference, base = arr, med
            diff = float(np.abs(np.asarray(arr, np.float32) - reference).max())
            rows.append((name, med, best, med / base, f"{diff:.2g}"))
        rows.append(("floor: gzip inflate alone (zlib)",
                     *timed(lambda: zlib.decompress(compressed, 31), args.repeats)[:2], None,
                     "-"))
        rows.append(("floor: gzip inflate alone (ISA-L)",
                     *timed(lambda: isal_zlib.decompress(compressed, 31), args.repeats)[:2],
                     None, "-"))

    print()
    print("| method | median s/volume | best s/volume | oncopipe faster by "
          "| max abs diff vs ours |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, med, best, ratio, diff in rows:
        speedup = f"{ratio:.1f}x" if ratio is not None else "-"
        print(f"| {name} | {med:.3f} | {best:.3f} | {speedup} | {diff} |")


if __name__ == "__main__":
    main()
