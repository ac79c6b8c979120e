"""PNG contact sheets: a row of example samples per class, for a person to look at."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from oncopipe.core.atomic import atomic_path


def to_uint8_rgb(img: np.ndarray) -> np.ndarray:
    """A 2D image as H x W x 3 uint8: accepts (H, W), (H, W, C) or (C, H, W); floats in [0, 1]."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a)


def write_contact_sheet(
    path: str | Path, rows: dict[str, list[np.ndarray]], tile: int = 96, per_row: int = 8
) -> None:
    """Write one row per class name: a label, then up to ``per_row`` tiles (RGB images)."""
    label_w = 160
    height = max(1, len(rows)) * (tile + 4) + 4
    width = label_w + per_row * (tile + 4) + 4
    sheet = np.full((height, width, 3), 32, np.uint8)
    for r, (name, images) in enumerate(rows.items()):
        y = 4 + r * (tile + 4)
        cv2.putText(sheet, name[:18], (6, y + tile // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 255), 1, cv2.LINE_AA)
        for c, img in enumerate(images[:per_row]):
            x = label_w + c * (tile + 4)
            rgb = to_uint8_rgb(img)
            sheet[y:y + tile, x:x + tile] = cv2.resize(rgb, (tile, tile),
                                                       interpolation=cv2.INTER_AREA)
    with atomic_path(path) as tmp:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError(f"{path}: PNG encoding failed")
        tmp.write_bytes(buf.tobytes())
