"""Models by name, the input adapter, transfer-learning options."""

from __future__ import annotations

import pytest
import torch

from oncopipe import models
from oncopipe.config import TrainParams


def _p(**kw) -> TrainParams:
    return TrainParams(**kw)


@pytest.mark.parametrize(("name", "shape"), [
    ("lenet5", (1, 32, 32)), ("cnn7", (3, 48, 48)), ("cnn3d", (1, 8, 16, 16)),
    ("resnet18", (1, 32, 32)), ("cnn7", (1, 4, 24, 24)),
])
def test_forward_gives_one_logit_per_class(name, shape):
    torch.manual_seed(0)
    model = models.build(_p(model=name, width=0.25 if name in models.SMALL else 1.0), shape, 3)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, *shape))
    assert out.shape == (2, 3)


def test_width_scales_the_small_networks():
    small = models.build(_p(model="cnn7", width=0.25), (3, 32, 32), 2)
    full = models.build(_p(model="cnn7", width=1.0), (3, 32, 32), 2)
    assert sum(p.numel() for p in small.parameters()) * 8 < sum(p.numel()
                                                                 for p in full.parameters())


def test_one_channel_is_repeated_for_imagenet_networks_and_volumes_fold_depth():
    gray = models.build(_p(model="resnet18"), (1, 32, 32), 2)
    assert gray.adapter.repeat == 3 and gray.adapter.mix is None
    vol = models.build(_p(model="resnet18"), (1, 5, 32, 32), 2)
    assert vol.adapter.fold_depth and vol.adapter.mix.in_channels == 5
    with pytest.raises(models.ModelError, match="volumes"):
        models.build(_p(model="cnn3d"), (1, 32, 32), 2)


def test_inception_gets_299_inputs_and_a_new_auxiliary_classifier():
    model = models.build(_p(model="inception_v3"), (3, 64, 64), 2)
    assert model.adapter.size == 299
    assert model.net.aux_logits and model.net.AuxLogits.fc.out_features == 2
    assert model.net.fc.out_features == 2
    out = torch.ones(2, 2), torch.zeros(2, 2)  # what Inception returns in training mode
    logits, aux = models.logits_and_aux(out)
    assert logits is out[0] and aux is out[1]
    assert models.logits_and_aux(out[0]) == (out[0], None)


@pytest.mark.parametrize("name", ["resnet50", "vgg16"])
def test_head_finetuning_freezes_the_backbone(name):
    model = models.build(_p(model=name, finetune="head"), (3, 32, 32), 4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head_ids = {id(p) for p in model.head.parameters()}
    head = {f"net.{n}" for n, p in model.net.named_parameters() if id(p) in head_ids}
    assert trainable == head and trainable
    linears = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 and linears[-1].out_features == 4
    model.train()
    assert not model.net.training and model.head.training  # frozen BN statistics


def test_local_weights_file_is_loaded(tmp_path):
    torch.manual_seed(1)
    source = models.build(_p(model="resnet18"), (3, 32, 32), 1000).net
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision_state(source), path)
    model = models.build(_p(model="resnet18", weights=str(path)), (3, 32, 32), 2)
    assert torch.equal(model.net.conv1.weight, source.conv1.weight)
    assert model.net.fc.out_features == 2
    with pytest.raises(models.ModelError, match="not found"):
        models.build(_p(model="resnet18", weights=str(tmp_path / "missing.pth")), (3, 8, 8), 2)


def torchvision_state(net: torch.nn.Module) -> dict:
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_unknown_weights_name_lists_the_choices():
    with pytest.raises(models.ModelError, match="IMAGENET1K_V1"):
        models.build(_p(model="resnet18", weights="IMAGENET_BOGUS"), (3, 32, 32), 2)
    with pytest.raises(models.ModelError, match="no pretrained"):
        models.build(_p(model="lenet5", weights="IMAGENET1K_V1"), (3, 32, 32), 2)
    with pytest.raises(models.ModelError, match="from scratch"):
        models.build(_p(model="cnn7", finetune="head"), (3, 32, 32), 2)
