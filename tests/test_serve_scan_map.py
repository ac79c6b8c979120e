"""Where an LIDC prediction's Grad-CAM map is drawn on the scan: the crop's rectangle on the
slice it came from, computed on the server from the crop parameters (the page only draws)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from oncopipe import datasets
from oncopipe.datasets.lidc.params import CropParams
from oncopipe.datasets.lidc.prepare import crop_on_view, crop_rect

# a 512 x 512 slice at 0.7 mm x 0.8 mm (x, y), 5 slices 2.5 mm apart
GEOMETRY = {"origin_xy": [-180.0, -200.0], "spacing_xy": [0.7, 0.8], "shape_yx": [512, 512],
            "zs": [-100.0, -97.5, -95.0, -92.5, -90.0]}


ROOT = Path(__file__).resolve().parents[1]


def _cfg(crops: CropParams):
    """The project's LIDC settings with these crop parameters."""
    cfg = datasets.load_config("lidc", ROOT / "params.yaml")
    return dataclasses.replace(cfg, prepare=dataclasses.replace(cfg.prepare, crops=crops))


def test_the_rectangle_is_centred_on_the_point_and_extent_over_spacing_wide():
    p = CropParams(size_2d=64, mm_per_px=0.7)  # 44.8 mm
    row, col = 300, 100
    x, y = -180.0 + col * 0.7, -200.0 + row * 0.8
    placed = crop_rect(GEOMETRY, (x, y, -94.0), p)
    assert placed["slice"] == 2 and placed["z_mm"] == -95.0  # the slice nearest z
    top, left, bottom, right = placed["rect"]
    assert (top + bottom) / 2 == pytest.approx(row) and (left + right) / 2 == pytest.approx(col)
    assert bottom - top == pytest.approx(44.8 / 0.8)  # 56 rows
    assert right - left == pytest.approx(44.8 / 0.7)  # 64 columns
    assert placed["visible"] == pytest.approx(placed["rect"])  # wholly on the slice


def test_a_point_near_the_edge_clips_the_rectangle_to_the_slice():
    p = CropParams(size_2d=64, mm_per_px=0.7)
    row, col = 5.0, 509.0  # near the top right corner
    placed = crop_rect(GEOMETRY, (-180.0 + col * 0.7, -200.0 + row * 0.8, -90.0), p)
    top, left, bottom, right = placed["rect"]
    assert top == pytest.approx(5 - 28) and right == pytest.approx(509 + 32)
    vt, vl, vb, vr = placed["visible"]
    assert (vt, vr) == (-0.5, 511.5)  # the slice's own edges
    assert (vl, vb) == (pytest.approx(left), pytest.approx(bottom))  # the other sides kept
    assert placed["slice"] == 4


def test_a_3d_crop_covers_its_field_of_view_and_its_map_is_cut_at_the_slice_shown():
    p = CropParams(input="3d", size_3d=32, fov_3d_mm=32.0)  # 1 mm planes
    cam = np.broadcast_to(np.arange(32, dtype=np.float32)[:, None, None] / 31, (32, 32, 32))
    point = (-180.0 + 200 * 0.7, -200.0 + 200 * 0.8, -96.0)  # 1 mm below slice 2 (z -95)
    placed = crop_on_view(_cfg(p), GEOMETRY, point, cam)
    top, left, bottom, right = placed["rect"]
    assert bottom - top == pytest.approx(32 / 0.8) and right - left == pytest.approx(32 / 0.7)
    assert placed["slice"] == 2
    # the plane 1 mm above the crop's centre (15.5): index 16.5, between planes 16 and 17
    assert placed["map"].shape == (32, 32)
    assert np.allclose(placed["map"], 16.5 / 31)


def test_a_2d_map_is_placed_as_it_is():
    p = CropParams(size_2d=64, mm_per_px=0.7)
    cam = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    placed = crop_on_view(_cfg(p), GEOMETRY, (-100.0, -100.0, -100.0), cam)
    assert np.array_equal(placed["map"], cam) and placed["slice"] == 0
