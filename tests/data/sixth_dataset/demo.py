"""Synthetic ``ddsm`` crops in the release layout: malignant ones carry a bright spot.

Imports only its params and generic modules the demo stage already runs, so ``demo@ddsm``
stays one templated block with the other datasets'.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from oncopipe.core.atomic import write_bytes
from oncopipe.core.config import DatasetConfig
from oncopipe.datasets.ddsm.params import CLASS_NAMES, SIDE


def write_demo(cfg: DatasetConfig, out_dir: Path) -> None:
    p = cfg.demo
    rng = np.random.default_rng(p.seed)
    for patient in range(p.n_patients):
        label = CLASS_NAMES["binary"][patient % 2]
        (out_dir / label).mkdir(parents=True, exist_ok=True)
        for k in range(p.images_per_patient):
            img = rng.integers(0, 90, (SIDE, SIDE, 3), dtype=np.uint8)
            if label == "malignant":
                y, x = rng.integers(8, SIDE - 8, 2)
                img[y - 4:y + 4, x - 4:x + 4] = 230
            ok, png = cv2.imencode(".png", img)
            assert ok
            write_bytes(out_dir / label / f"P{patient:03d}_{k}.png", png.tobytes())
