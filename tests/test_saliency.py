"""Grad-CAM over any Classifier: 2D, 3D, depth folded into a 2D network, frozen backbones."""

from __future__ import annotations

import pytest
import torch

from oncopipe.core.config import TrainParams
from oncopipe.learn import models
from oncopipe.serve import saliency


@pytest.mark.parametrize(("name", "shape", "finetune", "layer"), [
    ("lenet5", (3, 48, 48), "whole", "features.6"),  # adaptive pooling to 5x5
    ("cnn7", (3, 32, 32), "whole", None),  # ReLU(inplace=True) right after the hooked map
    ("cnn3d", (1, 8, 32, 32), "whole", None),
    ("resnet18", (1, 4, 32, 32), "whole", "layer3"),  # depth folded; layer4 is 1x1 here
    ("resnet18", (3, 64, 64), "head", "layer4"),  # frozen backbone: gradients still flow
])
def test_grad_cam_maps_the_sample_grid_and_leaves_the_model_as_it_was(name, shape, finetune,
                                                                      layer):
    torch.manual_seed(0)
    p = TrainParams(model=name, width=0.25 if name in models.SMALL else 1.0, finetune=finetune)
    model = models.build(p, shape, 2).eval()
    x = torch.rand(1, *shape)
    found = saliency.feature_module(model, x)
    if layer:
        assert found == layer
    before = model(x).detach()
    cams = [saliency.grad_cam(model, x, target, found) for target in (0, 1)]
    for cam in cams:
        assert cam.shape == shape[1:]
        assert cam.min() >= 0 and cam.max() <= 1
    assert not all(cam.max() == 0 for cam in cams)
    # the same map twice; no hook, no gradient, no changed output left behind
    assert (saliency.grad_cam(model, x, 0, found) == cams[0]).all()
    assert all(not m._forward_hooks for m in model.modules())
    assert all(q.grad is None for q in model.parameters())
    assert torch.equal(model(x), before)


def test_a_score_that_depends_on_nothing_gives_an_empty_map():
    """No evidence must show as no colour, not as noise normalised up to full scale."""
    torch.manual_seed(0)
    model = models.build(TrainParams(model="lenet5", width=0.5), (1, 40, 40), 2).eval()
    with torch.no_grad():
        last = model.net.classifier[-1]
        last.weight.zero_()
        last.bias.zero_()
    x = torch.rand(1, 1, 40, 40)
    assert saliency.grad_cam(model, x, 0).max() == 0
