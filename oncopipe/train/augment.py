"""On-the-fly, seeded augmentation of whole batches on the training device.

Augmenting a batch at once (one ``affine_grid`` + ``grid_sample`` for rotation, shift and zoom;
``torch.where`` for flips) costs a few kernel launches instead of a Python call per sample, and
runs on the GPU when there is one. Quarter turns alone (``rotate90`` without ``rotate_deg``,
``shift`` or ``zoom``, on square planes) are exact pixel permutations, so they are done with
flips and ``torch.rot90`` per combination of flips and turns: faster than resampling
(docs/benchmarks.md) and free of its rounding (the resampled grid lands up to 1e-5 away from
the exact values). Randomness comes from a ``torch.Generator`` the trainer seeds from (seed,
epoch, rank), so a run is reproducible whatever the number of DataLoader workers.

Volumes (N, C, D, H, W) get the same in-plane transform on every slice (rotation about the
depth axis, as in the MosMed reference), flips in-plane.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from oncopipe.core.config import AugmentParams


def is_active(p: AugmentParams) -> bool:
    return bool(p.hflip or p.vflip or p.rotate90 or p.rotate_deg or p.shift or p.zoom)


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def augment_batch(x: torch.Tensor, p: AugmentParams, gen: torch.Generator) -> torch.Tensor:
    """Return an augmented copy of float batch ``x`` (N, C, H, W) or (N, C, D, H, W).

    ``gen`` is a CPU generator; random draws happen on the CPU (cheap, device-independent) and
    the transform is applied on ``x``'s device.
    """
    if not is_active(p):
        return x
    n = x.shape[0]
    volume = x.dim() == 5
    planes = x.flatten(1, 2) if volume else x  # (N, C*D, H, W): same 2D transform per slice
    h_flip = torch.rand(n, generator=gen) < 0.5
    v_flip = torch.rand(n, generator=gen) < 0.5
    angle = _uniform(n, -p.rotate_deg, p.rotate_deg, gen) * (math.pi / 180.0)
    quarter = torch.zeros(n, dtype=torch.int64)
    if p.rotate90:
        quarter = torch.randint(0, 4, (n,), generator=gen)
        angle = angle + quarter.float() * (math.pi / 2)
    scale = _uniform(n, 1.0 - p.zoom, 1.0 + p.zoom, gen)
    shift = _uniform(2 * n, -p.shift, p.shift, gen).view(n, 2) * 2.0  # grid units span 2
    if p.rotate90 and not (p.rotate_deg or p.shift or p.zoom) and x.shape[-1] == x.shape[-2]:
        planes = _dihedral(planes, h_flip & p.hflip, v_flip & p.vflip, quarter)
        return planes.reshape(x.shape) if volume else planes
    if p.hflip:
        planes = torch.where(h_flip.to(x.device).view(n, 1, 1, 1), planes.flip(-1), planes)
    if p.vflip:
        planes = torch.where(v_flip.to(x.device).view(n, 1, 1, 1), planes.flip(-2), planes)
    if p.rotate_deg or p.rotate90 or p.shift or p.zoom:
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)],
            1,
        ).to(device=x.device, dtype=planes.dtype)
        grid = F.affine_grid(theta, list(planes.shape), align_corners=False)
        planes = F.grid_sample(planes, grid, mode="bilinear", padding_mode="border",
                               align_corners=False)
    return planes.reshape(x.shape) if volume else planes


def _dihedral(planes: torch.Tensor, h_flip: torch.Tensor, v_flip: torch.Tensor,
              quarter: torch.Tensor) -> torch.Tensor:
    """Flip sample i (``h_flip``, then ``v_flip``) and turn it ``quarter[i]`` x 90 degrees.

    Exactly what the flips + affine grid do: the grid's rotation by k quarter turns (output
    pixel -> input pixel) is ``torch.rot90`` with the same k over (H, W). One gather and one
    scatter per combination present, instead of a full-batch copy per flip.
    """
    out = torch.empty_like(planes)
    code = h_flip.long() * 8 + v_flip.long() * 4 + quarter
    for c in code.unique().tolist():
        chosen = (code == c).nonzero().flatten().to(planes.device)
        part = planes[chosen]
        if c & 8:
            part = part.flip(-1)
        if c & 4:
            part = part.flip(-2)
        out[chosen] = torch.rot90(part, c & 3, dims=(-2, -1)) if c & 3 else part
    return out
