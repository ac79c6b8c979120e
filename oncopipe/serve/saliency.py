"""Grad-CAM saliency for any :class:`oncopipe.learn.models.Classifier`, 2D or 3D.

Grad-CAM (Selvaraju et al. 2017) weights a convolutional feature map by the gradient of the
class score, averaged over space, and keeps the positive part: one forward and one backward
pass, so it stays cheap for 3D CT volumes where occlusion would need hundreds of passes. The
forward pass is the prediction's own (:func:`forward_with_cam`): the network up to the
feature map runs without autograd, as for a prediction, and the backward pass goes through
the head only.

It is model-agnostic: the feature map is found by a probe pass, as the output of the last
module of the network (any depth, the input adapter excluded) that still has more than one
spatial position. That is ``layer4`` of a ResNet, ``Mixed_7c`` of Inception-v3, the last
pooled block of the small CNNs, so no model needs a named "target layer". The map is then
brought back to the stored sample's grid: the adapter's resize is undone by interpolation,
and for volumes folded into a 2D network's channels the 2D map holds for every slice.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oncopipe.learn.models import Classifier, logits_and_aux


def this_thread(hook: Callable) -> Callable:
    """``hook`` acting only on forward passes in the calling thread: a model serving
    concurrent requests runs other threads' passes untouched while one is explained."""
    owner = threading.get_ident()

    def guarded(module, inp, out):
        return hook(module, inp, out) if threading.get_ident() == owner else None

    return guarded


def feature_module(model: Classifier, x: torch.Tensor) -> str:
    """Name (in ``model.net``) of the last module whose output is a spatial map (> 1 cell)."""
    seen: list[tuple[str, tuple[int, ...]]] = []

    def record(name: str):
        def hook(_module, _inp, out):
            if isinstance(out, torch.Tensor):
                seen.append((name, tuple(out.shape)))
        return hook

    handles = [m.register_forward_hook(this_thread(record(name)))
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


def forward_with_cam(model: Classifier, x: torch.Tensor, layer: str
                     ) -> tuple[torch.Tensor, Callable[[int], np.ndarray]]:
    """The logits of one forward pass of ``x`` and a function giving, for a class, its
    Grad-CAM map (as :func:`grad_cam`) from that same pass.

    The part of the network before ``layer`` runs without autograd, exactly as a prediction
    does (so the logits equal :meth:`oncopipe.predict.Predictor.predict`'s); the feature map
    becomes a leaf of a graph recorded for the head only, so a map costs a backward pass
    through the head, not through the whole network. ``x``: a batch of one in model range.
    """
    module: nn.Module = model.net.get_submodule(layer)
    leaves: list[torch.Tensor] = []

    def hook(_module, _inp, out):
        torch.set_grad_enabled(True)  # for the rest of this forward pass: the head
        leaf = out.detach().requires_grad_(True)
        leaves.append(leaf)
        return leaf.clone()  # later in-place ops (ReLU(inplace=True)) must not touch the leaf

    handle = module.register_forward_hook(this_thread(hook))
    try:
        with torch.no_grad():  # restores the grad mode the hook switched on
            logits, _ = logits_and_aux(model(x.detach()))
    finally:
        handle.remove()
    if not leaves:
        raise ValueError(f"layer {layer!r} was not called by the forward pass")
    leaf = leaves[-1]  # a module called several times: its final output feeds the head

    def cam(target: int) -> np.ndarray:
        grad = None
        if logits.requires_grad:
            grad, = torch.autograd.grad(logits[0, target], leaf, retain_graph=True,
                                        allow_unused=True)
        return _map(leaf.detach()[0], grad[0] if grad is not None else None, x.shape[2:])

    return logits.detach(), cam


def grad_cam(model: Classifier, x: torch.Tensor, target: int,
             layer: str | None = None) -> np.ndarray:
    """Map in [0, 1] over the sample's spatial grid (H, W) or (D, H, W) for class ``target``.

    ``x``: a batch of one in model range, as fed to ``model``. ``layer``: from
    :func:`feature_module` (found again when not given).
    """
    _, cam = forward_with_cam(model, x, layer or feature_module(model, x))
    return cam(target)


def _map(act: torch.Tensor, grad: torch.Tensor | None, spatial: tuple[int, ...]
         ) -> np.ndarray:
    """Grad-CAM of one feature map (C, *grid) and its gradient, on the sample's grid;
    zeros where the score does not depend on the map."""
    if grad is None:
        return np.zeros(tuple(spatial), np.float32)
    act, grad = act.float(), grad.float()
    weights = grad.mean(dim=tuple(range(1, grad.dim())), keepdim=True)
    cam = torch.relu((weights * act).sum(0))
    spatial = tuple(spatial)
    if cam.dim() == len(spatial):
        mode = "bilinear" if cam.dim() == 2 else "trilinear"
        cam = F.interpolate(cam[None, None], size=spatial, mode=mode, align_corners=False)[0, 0]
    else:  # depth folded into channels: one 2D map for every slice
        cam = F.interpolate(cam[None, None], size=spatial[-2:], mode="bilinear",
                            align_corners=False)[0, 0].expand(*spatial)
    cam = cam.clamp_min(0)
    top = float(cam.max())
    return (cam / top if top > 0 else cam).numpy().astype(np.float32)
