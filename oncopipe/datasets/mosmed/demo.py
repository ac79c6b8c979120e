"""Synthetic MosMedData in the real release layout, small enough for the demo pipeline.

What it writes (``out_dir``), like the COVID19_1110 release:

- ``studies/CT-k/study_NNNN.nii.gz``: NIfTI-1, gzip, int16 HU, voxel order (x, y, z) with an
  L, A, S affine (x flipped against RAS), z spacing 8 mm, 36-44 slices, qform/sform code 1,
  scl_slope unset; ids numbered from the start of each category's real id range;
- ``masks/study_NNNN_mask.nii.gz``: int16 {0, 1} lesion masks for the first few CT-1 studies;
- ``dataset_registry.csv``: UTF-8 with a BOM, paths with a leading ``/``.

Each volume is a chest phantom placed in patient coordinates (body, fat layer, two lungs with
vessels, heart on the patient's left, spine and aorta posterior), so orientation mistakes show.
Abnormal studies get ground-glass opacities with consolidated cores in the lungs, covering a
fraction of lung volume that grows with the category (CT-1 < 25%, CT-2 25-50%, CT-3 50-75%,
CT-4 > 75%, as the release defines them); the masks are exactly those lesions. In-plane size
is reduced (128 px with 4x the real pixel spacing) for speed; ``size: 512`` gives real-sized
volumes (the benchmark uses that).

Determinism: one ``numpy`` generator per study seeded from (seed, study id), gzip written with
mtime 0 and no file name, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from oncopipe.core.atomic import write_bytes
from oncopipe.datasets.mosmed.params import ID_RANGES, DemoParams

# fraction of lung volume involved, per category (the release's definition of CT-1..CT-4)
INVOLVEMENT: dict[str, tuple[float, float]] = {
    "CT-0": (0.0, 0.0), "CT-1": (0.08, 0.22), "CT-2": (0.28, 0.47), "CT-3": (0.53, 0.72),
    "CT-4": (0.78, 0.9),
}
Z_SPACING_MM = 8.0
REAL_SIZE = 512


def write_demo(cfg, out_dir: Path) -> None:
    """Write the demo release into ``out_dir`` (``cfg.demo`` holds :class:`DemoParams`)."""
    params: DemoParams = cfg.demo
    rows = ["study_id,category,study_file,mask_file"]
    for category, n in zip(ID_RANGES, params.studies, strict=True):
        first = ID_RANGES[category][0]
        for k in range(n):
            study_id = first + k
            name = f"study_{study_id:04d}"
            with_mask = category == "CT-1" and k < params.masks
            hu, lesion, affine = phantom(params, category, study_id)
            study_rel = f"studies/{category}/{name}.nii.gz"
            write_nifti(out_dir / study_rel, hu, affine)
            mask_rel = ""
            if with_mask:
                mask_rel = f"masks/{name}_mask.nii.gz"
                write_nifti(out_dir / mask_rel, lesion.astype(np.int16), affine)
            rows.append(f"{study_id},{category},/{study_rel},{'/' + mask_rel if mask_rel else ''}")
    write_bytes(out_dir / "dataset_registry.csv", ("\n".join(rows) + "\n").encode("utf-8-sig"))


def nifti_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    """A gzip-compressed NIfTI-1 file, byte-identical for identical input (mtime 0)."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm")
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    write_bytes(path, nifti_bytes(data, affine))


def las_affine(spacing: tuple[float, float, float], shape: tuple[int, int, int]) -> np.ndarray:
    """(x, y, z) voxels with x towards the patient's left: the release's L, A, S affine."""
    sx, sy, sz = spacing
    nx, ny, _ = shape
    return np.array([
        [-sx, 0.0, 0.0, sx * (nx - 1) / 2],
        [0.0, sy, 0.0, -sy * (ny - 1) / 2],
        [0.0, 0.0, sz, -150.0],
        [0.0, 0.0, 0.0, 1.0],
    ])


def phantom(params: DemoParams, category: str, study_id: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int16 HU volume, bool lesion mask, affine) of one study, voxels in (x, y, z) order."""
    rng = np.random.default_rng([params.seed, study_id])
    n = params.size
    nz = int(rng.integers(params.slices[0], params.slices[1] + 1))
    spacing_xy = float(rng.uniform(0.6, 0.9)) * REAL_SIZE / n
    # patient coordinates in [-1, 1]: lr > 0 is the patient's left, ap > 0 anterior,
    # s from -1 (lung bases) to 1 (apices); x index runs to the left, y index to anterior
    lr = ((np.arange(n) + 0.5) / n * 2 - 1)[:, None, None]
    ap = ((np.arange(n) + 0.5) / n * 2 - 1)[None, :, None]
    s = ((np.arange(nz) + 0.5) / nz * 2 - 1)[None, None, :]
    scale = float(rng.uniform(0.9, 1.05))  # body size
    shape = (n, n, nz)

    hu = np.full(shape, -1000.0, np.float32)
    body = ((lr / (0.86 * scale)) ** 2 + ((ap + 0.05) / (0.62 * scale)) ** 2) < 1
    body = np.broadcast_to(body, shape)
    hu[body] = -100.0  # subcutaneous fat
    inner = np.broadcast_to(
        ((lr / (0.8 * scale)) ** 2 + ((ap + 0.05) / (0.56 * scale)) ** 2) < 1, shape)
    hu[inner] = 40.0  # muscle and mediastinum
    taper = np.sqrt(np.clip(1 - ((s + 0.2) / 1.25) ** 2, 0, 1))  # lungs narrow to the apex
    lungs = np.zeros(shape, bool)
    for side in (-1, 1):
        lungs |= (((lr - side * 0.36 * scale) / (0.27 * scale * taper + 1e-6)) ** 2
                  + ((ap + 0.02) / (0.4 * scale * taper + 1e-6)) ** 2) < 1
    heart = (((lr - 0.12) / 0.24) ** 2 + ((ap - 0.12) / 0.2) ** 2
             + ((s + 0.55) / 0.5) ** 2) < 1  # lower chest, to the patient's left
    lungs &= ~heart
    hu[lungs] = -860.0
    for _ in range(12):  # vessels: thin tubes running cranio-caudally
        cx, cy = rng.uniform(-0.6, 0.6), rng.uniform(-0.3, 0.3)
        tube = np.broadcast_to((lr - cx) ** 2 + (ap - cy) ** 2 < (0.012 + 0.01 * rng.random()) ** 2,
                               shape)
        hu[tube & lungs] = 30.0
    hu[np.broadcast_to(heart, shape)] = 45.0
    aorta = np.broadcast_to((lr - 0.07) ** 2 + (ap + 0.3) ** 2 < 0.06**2, shape)
    hu[aorta] = 50.0
    spine = np.broadcast_to(lr**2 + (ap + 0.5) ** 2 < 0.09**2, shape)
    hu[spine] = 700.0  # cortical bone, above the clip window
    hu[np.broadcast_to(lr**2 + (ap + 0.5) ** 2 < 0.05**2, shape)] = 250.0

    lesion = _lesions(rng, lungs, (lr, ap, s), INVOLVEMENT[category])
    if lesion.any():
        hu[lesion] = rng.uniform(-650, -450)  # ground glass
        hu[_consolidation(lesion, (lr, ap, s), rng, category)] = rng.uniform(-60, 30)
    if params.noise_hu:
        hu += rng.normal(0.0, params.noise_hu, shape).astype(np.float32)
    hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return hu, lesion, las_affine((spacing_xy, spacing_xy, Z_SPACING_MM), shape)


def _lesions(rng: np.random.Generator, lungs: np.ndarray, coords: tuple[np.ndarray, ...],
             involvement: tuple[float, float]) -> np.ndarray:
    """Patches of lung grown blob by blob until they cover the target fraction of it."""
    lesion = np.zeros(lungs.shape, bool)
    if involvement[1] <= 0 or not lungs.any():
        return lesion
    target = rng.uniform(*involvement)
    idx = np.nonzero(lungs)  # work on lung voxels only: a blob never leaves the lungs
    lr, ap, s = (c.reshape(-1)[i] for c, i in zip(coords, idx, strict=True))
    covered = np.zeros(len(lr), bool)
    for _ in range(200):
        if covered.mean() >= target:
            break
        k = rng.integers(len(lr))
        r = rng.uniform(0.08, 0.2)
        dist2 = ((lr - lr[k]) ** 2 + (ap - ap[k]) ** 2) / r**2 + ((s - s[k]) / (1.8 * r)) ** 2
        covered |= dist2 < 1
    lesion[idx] = covered
    return lesion


def _consolidation(lesion: np.ndarray, coords: tuple[np.ndarray, ...],
                   rng: np.random.Generator, category: str) -> np.ndarray:
    """Dense cores inside the ground glass; more of them in the higher categories."""
    share = {"CT-1": 0.1, "CT-2": 0.2, "CT-3": 0.3, "CT-4": 0.4}[category]
    lr, ap, s = coords
    cx, cy = rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.3)
    dist = np.sqrt((lr - cx) ** 2 + (ap - cy) ** 2 + (0.3 * s) ** 2)
    dist = np.broadcast_to(dist, lesion.shape)
    values = dist[lesion]
    cut = np.quantile(values, share)
    return lesion & (dist <= cut)
