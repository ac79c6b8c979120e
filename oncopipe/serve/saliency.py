"""Grad-CAM saliency for any :class:`oncopipe.learn.models.Classifier`, 2D or 3D.

Grad-CAM (Selvaraju et al. 2017) weights a convolutional feature map by the gradient of the
class score, averaged over space, and keeps the positive part: one forward and one backward
pass, so it stays cheap for 3D CT volumes where occlusion would need hundreds of passes.

It is model-agnostic: the feature map is found by a probe pass, as the output of the last
module of the network (any depth, the input adapter excluded) that still has more than one
spatial position. That is ``layer4`` of a ResNet, ``Mixed_7c`` of Inception-v3, the last
pooled block of the small CNNs, so no model needs a named "target layer". The map is then
brought back to the stored sample's grid: the adapter's resize is undone by interpolation,
and for volumes folded into a 2D network's channels the 2D map holds for every slice.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oncopipe.learn.models import Classifier, logits_and_aux


def feature_module(model: Classifier, x: torch.Tensor) -> str:
    """Name (in ``model.net``) of the last module whose output is a spatial map (> 1 cell)."""
    seen: list[tuple[str, tuple[int, ...]]] = []

    def record(name: str):
        def hook(_module, _inp, out):
            if isinstance(out, torch.Tensor):
                seen.append((name, tuple(out.shape)))
        return hook

    handles = [m.register_forward_hook(record(name))
               for name, m in model.net.named_modules() if name]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    for name, shape in reversed(seen):
        if len(shape) in (4, 5) and math.prod(shape[2:]) > 1:
            return name
    raise ValueError("no spatial feature map found in the network")


def grad_cam(model: Classifier, x: torch.Tensor, target: int,
             layer: str | None = None) -> np.ndarray:
    """Map in [0, 1] over the sample's spatial grid (H, W) or (D, H, W) for class ``target``.

    ``x``: a batch of one in model range, as fed to ``model``. ``layer``: from
    :func:`feature_module` (found again when not given).
    """
    layer = layer or feature_module(model, x)
    module: nn.Module = model.net.get_submodule(layer)
    calls: list[dict] = []

    def hook(_module, _inp, out):
        store: dict = {"act": out.detach()}
        out.register_hook(lambda g: store.__setitem__("grad", g.detach()))
        calls.append(store)
        return out.clone()  # later in-place ops (ReLU(inplace=True)) must not touch ``out``

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            inp = x.detach().clone().requires_grad_(True)  # gradients even if weights are frozen
            logits, _ = logits_and_aux(model(inp))
            logits[0, target].backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    last = calls[-1]  # a module called several times: its final output feeds the head
    act, grad = last["act"][0].float(), last["grad"][0].float()
    weights = grad.mean(dim=tuple(range(1, grad.dim())), keepdim=True)
    cam = torch.relu((weights * act).sum(0))
    spatial = tuple(x.shape[2:])
    if cam.dim() == len(spatial):
        mode = "bilinear" if cam.dim() == 2 else "trilinear"
        cam = F.interpolate(cam[None, None], size=spatial, mode=mode, align_corners=False)[0, 0]
    else:  # depth folded into channels: one 2D map for every slice
        cam = F.interpolate(cam[None, None], size=spatial[-2:], mode="bilinear",
                            align_corners=False)[0, 0].expand(*spatial)
    cam = cam.clamp_min(0)
    top = float(cam.max())
    return (cam / top if top > 0 else cam).numpy().astype(np.float32)
