"""Pictures for the page: the sample as the model saw it, the saliency over it.

Everything is encoded server-side as PNG data URLs, so the page needs no plotting library
and nothing from a network. Samples are in the manifest's layout: (C, H, W) images (3
channels: RGB; 1 channel: grey) and (C, D, H, W) volumes, shown as their three mid-planes.
"""

from __future__ import annotations

import base64

import cv2
import numpy as np
import torch

from oncopipe.learn.loader import to_float

MIN_SIDE = 192  # small crops (64 px) are enlarged so a person can see them


def png_data_url(rgb: np.ndarray) -> str:
    """(H, W, 3) uint8 RGB or (H, W) grey -> ``data:image/png;base64,...``."""
    img = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _enlarge(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    factor = max(1, -(-MIN_SIDE // max(1, min(h, w))))
    if factor == 1:
        return img
    return cv2.resize(img, (w * factor, h * factor), interpolation=cv2.INTER_NEAREST)


def _rgb(plane: np.ndarray) -> np.ndarray:
    """(C, H, W) floats in [0, 1] -> (H, W, 3) uint8."""
    u8 = np.rint(np.clip(plane, 0, 1) * 255).astype(np.uint8)
    if u8.shape[0] == 3:
        return np.ascontiguousarray(u8.transpose(1, 2, 0))
    return np.repeat(u8[0][..., None], 3, axis=2)


def overlay(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``cam`` in [0, 1] (H, W) as a colour map over ``rgb`` (H, W, 3) uint8."""
    heat = cv2.applyColorMap(np.rint(np.clip(cam, 0, 1) * 255).astype(np.uint8),
                             cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 1 - alpha, heat, alpha, 0)


def planes(sample: np.ndarray, cam: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(title, (C, H, W) image plane, (H, W) saliency plane) for each view of the sample."""
    x = to_float(torch.from_numpy(np.ascontiguousarray(sample))).numpy()
    if x.ndim == 3:
        return [("input", x, cam)]
    d, h, w = x.shape[1:]
    return [(f"axial, slice {d // 2 + 1} of {d}", x[:, d // 2], cam[d // 2]),
            (f"coronal, row {h // 2 + 1} of {h}", x[:, ::-1, h // 2, :], cam[::-1, h // 2, :]),
            (f"sagittal, column {w // 2 + 1} of {w}", x[:, ::-1, :, w // 2],
             cam[::-1, :, w // 2])]


def sample_views(sample: np.ndarray, cam: np.ndarray) -> list[dict]:
    """The page's pictures: per view, the input and the saliency over it (data URLs)."""
    out = []
    for title, plane, heat in planes(sample, cam):
        rgb = _rgb(plane)
        out.append({"title": title, "input": png_data_url(_enlarge(rgb)),
                    "saliency": png_data_url(_enlarge(overlay(rgb, heat)))})
    return out
