"""Quarter-turn augmentation: exact rot90 gives today's affine-resampled tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from oncopipe.core.config import AugmentParams
from oncopipe.train.augment import augment_batch


def _affine_reference(x, p, gen):
    """``augment_batch`` as it was before the rot90 path: every rotation via grid_sample."""
    n = x.shape[0]
    volume = x.dim() == 5
    planes = x.flatten(1, 2) if volume else x
    h_flip = torch.rand(n, generator=gen) < 0.5
    v_flip = torch.rand(n, generator=gen) < 0.5
    angle = (torch.rand(n, generator=gen) * (2 * p.rotate_deg) - p.rotate_deg) * (math.pi / 180)
    if p.rotate90:
        angle = angle + torch.randint(0, 4, (n,), generator=gen).float() * (math.pi / 2)
    scale = torch.rand(n, generator=gen) * (2 * p.zoom) + (1.0 - p.zoom)
    shift = (torch.rand(2 * n, generator=gen) * (2 * p.shift) - p.shift).view(n, 2) * 2.0
    if p.hflip:
        planes = torch.where(h_flip.view(n, 1, 1, 1), planes.flip(-1), planes)
    if p.vflip:
        planes = torch.where(v_flip.view(n, 1, 1, 1), planes.flip(-2), planes)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1).to(planes.dtype)
    grid = F.affine_grid(theta, list(planes.shape), align_corners=False)
    planes = F.grid_sample(planes, grid, mode="bilinear", padding_mode="border",
                           align_corners=False)
    return planes.reshape(x.shape) if volume else planes


@pytest.mark.parametrize("shape", [(32, 3, 16, 16), (16, 1, 4, 12, 12)])
@pytest.mark.parametrize("flips", [False, True])
def test_rotate90_matches_the_affine_path_exactly_permuted(shape, flips):
    x = torch.rand(*shape)
    p = AugmentParams(hflip=flips, vflip=flips, rotate90=True)
    gen_new, gen_old = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    new = augment_batch(x, p, gen_new)
    old = _affine_reference(x, p, gen_old)
    torch.testing.assert_close(new, old, atol=2e-6, rtol=0)
    assert torch.equal(gen_new.get_state(), gen_old.get_state())  # same draws consumed
    # Every output is an exact permutation of its input's pixels (no resampling error).
    planes, out = x.flatten(1, -3), new.flatten(1, -3)
    variants = [planes.flip(-1), planes.flip(-2), planes.flip(-1).flip(-2), planes]
    for i in range(len(x)):
        assert any(torch.equal(out[i], torch.rot90(v[i], k, dims=(-2, -1)))
                   for v in variants for k in range(4)), i
    turned = [not torch.equal(out[i], planes[i]) for i in range(len(x))]
    assert any(turned) and not all(turned)


def test_non_square_planes_keep_the_affine_path():
    x = torch.rand(8, 1, 6, 10)
    p = AugmentParams(rotate90=True)
    new = augment_batch(x, p, torch.Generator().manual_seed(1))
    assert torch.equal(new, _affine_reference(x, p, torch.Generator().manual_seed(1)))
