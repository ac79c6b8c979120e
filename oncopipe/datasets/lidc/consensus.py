"""LIDC-IDRI as an nnU-Net v2 raw dataset: the CT around each nodule and the readers'
consensus mask.

Each reader who marked a nodule >= 3 mm drew its outline on every slice it spans. A reader's
mask is pylidc's ``Annotation.boolean_mask``: inside the outlines, holes (exclusion rois)
removed, the outline pixels themselves left out (the readers drew the outer boundary). The
label is the consensus of the lesion's readers, as pylidc's ``utils.consensus`` and the LIDC
literature make it: a voxel is nodule when at least ``nnunet.consensus`` (0.5: half) of the
readers include it. The image is the series' HU at native resolution over the box of every
outline plus a margin, at least :data:`MIN_SIDE` pixels wide, and a few slices above and below.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl
from matplotlib.path import Path as MplPath

from oncopipe.core.errors import RejectError
from oncopipe.datasets.lidc.pixels import read_series
from oncopipe.datasets.lidc.series import SeriesHeader
from oncopipe.export.nnunet import Case

DATASET_ID = 501  # rename the folder if it clashes with a dataset of yours
NAME = "LIDC"
LABELS = {"background": 0, "nodule": 1}
MIN_SIDE = 64  # pixels, in-plane
MARGIN_YX = 8  # pixels around the outlines
MARGIN_K = 2  # slices above and below

def reader_mask(rois: list[dict], box: tuple[int, int, int, int, int, int]) -> np.ndarray:
    """One reader's boolean mask (k, y, x) over ``box`` = (k0, k1, y0, y1, x0, x1)."""
    k0, k1, y0, y1, x0, x1 = box
    mask = np.zeros((k1 - k0, y1 - y0, x1 - x0), bool)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    grid = np.c_[xx.ravel(), yy.ravel()]
    for include in (True, False):  # pylidc: every inclusion first, then every hole
        for r in rois:
            if r["inclusion"] != include:
                continue
            pts = np.c_[r["xs"], r["ys"]]
            ring = pts if (pts[0] == pts[-1]).all() else np.vstack([pts, pts[:1]])
            inside = MplPath(ring, closed=True).contains_points(grid).reshape(yy.shape)
            plane = mask[r["k"] - k0]
            if include:
                plane |= inside
            else:
                plane &= ~inside
            plane[pts[:, 1] - y0, pts[:, 0] - x0] = False
    return mask


def consensus_mask(masks: list[np.ndarray], level: float) -> np.ndarray:
    """Voxels that at least ``level`` of the readers include (pylidc's ``consensus``)."""
    return np.mean(masks, axis=0) >= level


def lesion_box(rois: pl.DataFrame, header: SeriesHeader) -> tuple[int, int, int, int, int, int]:
    """The outlines' box plus margins, at least :data:`MIN_SIDE` wide, inside the series."""
    ys = np.concatenate(rois["ys"].to_list())
    xs = np.concatenate(rois["xs"].to_list())
    ks = rois["k"].to_numpy()
    rows, cols = header.shape_yx

    def span(lo: int, hi: int, size: int) -> tuple[int, int]:
        lo, hi = lo - MARGIN_YX, hi + 1 + MARGIN_YX
        grow = max(0, MIN_SIDE - (hi - lo))
        lo, hi = lo - grow // 2, hi + grow - grow // 2
        shift = max(0, -lo) - max(0, hi - size)
        return max(0, lo + shift), min(size, hi + shift)

    y0, y1 = span(int(ys.min()), int(ys.max()), rows)
    x0, x1 = span(int(xs.min()), int(xs.max()), cols)
    k0 = max(0, int(ks.min()) - MARGIN_K)
    k1 = min(len(header.slices), int(ks.max()) + 1 + MARGIN_K)
    return k0, k1, y0, y1, x0, x1


def affine(header: SeriesHeader, box: tuple[int, int, int, int, int, int]) -> np.ndarray:
    """NIfTI (RAS) affine of voxels (x, y, z) = (column, row, slice) of ``box``."""
    k0, _, y0, _, x0, _ = box
    x, y, z = header.voxel_to_mm(k0, y0, x0)  # LPS
    sx, sy = header.spacing_xy
    dz = header.z_step or header.slice_thickness or 1.0
    return np.array([[-sx, 0, 0, -x], [0, -sy, 0, -y], [0, 0, dz, z], [0, 0, 0, 1.0]])


def cases(table: pl.DataFrame, contours: pl.DataFrame,
          headers: dict[tuple[str, str], SeriesHeader], split_of: dict[str, str], level: float,
          rejects: list[tuple[str, str]]) -> Iterator[Case]:
    """A case per nodule of ``table`` whose patient the shards split; the others, and those
    whose pixels cannot be read, are appended to ``rejects`` as (lesion id, reason)."""
    by_lesion = {k[0]: v for k, v in contours.group_by(["lesion_id"], maintain_order=True)}
    for row in table.filter(pl.col("kind") == "nodule").sort("lesion_id").iter_rows(named=True):
        lesion = row["lesion_id"]
        split = split_of.get(row["patient_id"])
        rois = by_lesion.get(lesion)
        header = headers.get((row["series_dir"], row["series_uid"]))
        if split is None or rois is None or header is None:
            why = ("patient in no split of the shards (no sample kept)" if split is None
                   else "no outlines" if rois is None else "series not in the slice table")
            rejects.append((lesion, why))
            continue
        box = lesion_box(rois, header)
        try:
            ks, rows = np.arange(box[0], box[1]), slice(box[2], box[3])
            hu = read_series(header, ks, rows=rows).hu(ks, rows, slice(box[4], box[5]))
        except RejectError as exc:
            rejects.append((lesion, f"pixels not read: {exc}"))
            continue
        marks = [reader_mask(part.to_dicts(), box)
                 for _, part in rois.group_by(["mark"], maintain_order=True)]
        label = consensus_mask(marks, level)
        to_xyz = (2, 1, 0)  # (k, y, x) -> NIfTI (x, y, z)
        yield Case(case_id=lesion, patient_id=row["patient_id"], split=split,
                   image=np.round(hu).astype(np.int16).transpose(to_xyz),
                   label=label.astype(np.uint8).transpose(to_xyz), affine=affine(header, box))
