"""MedMNIST ``.npz`` files: ``<flag>.npz`` (28) and ``<flag>_<size>.npz`` per size.

The keys MedMNIST's dataset class reads (``train_images``, ``train_labels``, ``val_*``,
``test_*``; images uint8, (N, S, S) gray or (N, S, S, 3) RGB, (N, S, S, S) for volumes;
labels (N, 1)), plus ``<split>_sample_ids`` and ``<split>_patient_ids`` that it ignores.
``info.json`` is the ``medmnist.INFO`` entry the flag needs: MedMNIST only opens the flags
it knows, so a user adds it (``medmnist.INFO[flag] = info``) and subclasses
``MedMNIST2D`` / ``MedMNIST3D`` with ``flag`` set (docs/exports.md).
Sizes a dimension does not have in MedMNIST (2D: 28/64/128/224; 3D: 28/64) are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from oncopipe.export import npz
from oncopipe.export.source import SPLITS, Source

SIZES_2D = (28, 64, 128, 224)
SIZES_3D = (28, 64)


def flag(source: Source) -> str:
    return f"{source.meta.dataset}mnist"


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Model-range floats in [0, 1] (or uint8 already) as uint8."""
    if array.dtype == np.uint8:
        return array
    return np.round(np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def resize(array: np.ndarray, size: int, volumetric: bool) -> np.ndarray:
    """One channel-first sample -> MedMNIST's layout at ``size`` (bicubic 2D, trilinear 3D)."""
    if volumetric:
        vol = torch.from_numpy(array[:1].astype(np.float32))[None]
        out = torch.nn.functional.interpolate(vol, size=(size,) * 3, mode="trilinear",
                                              align_corners=False)[0, 0].numpy()
        return to_uint8(out)
    hwc = np.transpose(to_uint8(array), (1, 2, 0))
    img = Image.fromarray(hwc[..., 0] if hwc.shape[-1] == 1 else hwc)
    return np.asarray(img.resize((size, size), Image.Resampling.BICUBIC))


def write(source: Source, out_dir: Path, params) -> dict:
    allowed = SIZES_3D if source.volumetric else SIZES_2D
    sizes = [s for s in params.medmnist_sizes if s in allowed]
    written = {}
    for size in sizes:
        arrays: dict[str, np.ndarray] = {}
        for split in SPLITS:
            rows = source.split(split).to_dicts()
            shape = (size,) * (3 if source.volumetric else 2)
            imgs = [resize(source.array(r), size, source.volumetric) for r in rows]
            arrays[f"{split}_images"] = np.stack(imgs) if imgs else np.zeros((0, *shape),
                                                                            np.uint8)
            arrays[f"{split}_labels"] = np.array([[r["label"]] for r in rows],
                                                 dtype=np.uint8).reshape(-1, 1)
            arrays[f"{split}_sample_ids"] = np.array([r["sample_id"] for r in rows], dtype=str)
            arrays[f"{split}_patient_ids"] = np.array([r["patient_id"] for r in rows],
                                                      dtype=str)
        name = f"{flag(source)}{'' if size == 28 else f'_{size}'}.npz"
        npz.write(out_dir / name, arrays)
        written[name] = {s: len(arrays[f"{s}_labels"]) for s in SPLITS}
    channels = 1 if source.volumetric else int(source.array(source.table.row(0, named=True))
                                               .shape[0])
    info = {
        "python_class": flag(source).capitalize(),
        "description": f"{source.meta.dataset} ({source.meta.task}), exported by oncopipe",
        "task": "binary-class" if len(source.class_names) == 2 else "multi-class",
        "label": {str(i): n for i, n in enumerate(source.class_names)},
        "n_channels": channels,
        "n_samples": {s: len(source.split(s)) for s in SPLITS},
        "license": "see the dataset's data card",
    }
    (out_dir / "info.json").write_text(json.dumps({flag(source): info}, indent=2,
                                                  sort_keys=True) + "\n", encoding="utf-8")
    return written
