"""Models by name, the input adapter, transfer-learning options."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from serve_project import untrained_card

from oncopipe.core.config import TrainParams
from oncopipe.core.errors import ModelError
from oncopipe.learn import inference, models


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


# --------------------------------------------------------------------------------------------
# build -> save -> load_model: the network that trained is the one evaluated and served
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pretrained_files(tmp_path_factory):
    """Local ImageNet-style state dicts (random init: no network), as a user would give."""
    root = tmp_path_factory.mktemp("weights")
    files = {}
    for name in ("resnet18", "inception_v3"):
        torch.manual_seed(3)
        extra = {"init_weights": True, "aux_logits": True} if name == "inception_v3" else {}
        net = torchvision.models.get_model(name, weights=None, **extra)
        files[name] = root / f"{name}.pth"
        torch.save(net.state_dict(), files[name])
    return files


ROUND_TRIP = [
    ("lenet5", {"width": 0.5}, (1, 32, 32)),
    ("cnn7", {"width": 0.25}, (3, 32, 32)),
    ("cnn7", {"width": 0.25}, (1, 4, 24, 24)),  # depth folded into channels, 1x1 mixing
    ("cnn3d", {"width": 0.25}, (1, 8, 16, 16)),
    ("resnet18", {}, (1, 32, 32)),
    ("resnet18", {"finetune": "head", "weights": "resnet18"}, (3, 32, 32)),
    ("resnet50", {}, (3, 32, 32)),
    ("resnet101", {"normalize": "imagenet"}, (3, 32, 32)),
    ("vgg16", {"finetune": "head", "normalize": "imagenet"}, (3, 32, 32)),
    ("inception_v3", {"input_size": 80, "weights": "inception_v3"}, (3, 40, 40)),
    ("inception_v3", {"input_size": 80, "finetune": "head"}, (1, 40, 40)),
]


@pytest.mark.parametrize(("name", "settings", "shape"), ROUND_TRIP,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in s.items())}"
                              for n, s, _ in ROUND_TRIP])
def test_saved_and_loaded_model_gives_identical_outputs(name, settings, shape, tmp_path,
                                                         pretrained_files):
    if settings.get("weights") in pretrained_files:
        settings = {**settings, "weights": str(pretrained_files[settings["weights"]])}
    torch.manual_seed(0)
    model = models.build(_p(model=name, **settings), shape, 3).eval()
    # what training.train writes: the weights and the architecture in config.json
    torch.save(model.state_dict(), tmp_path / inference.MODEL_FILE)
    card = untrained_card(model, _p(model=name, **settings), ["a", "b", "c"])
    (tmp_path / inference.CONFIG_FILE).write_text(card.to_json())
    loaded, _ = inference.load_model(tmp_path)
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.architecture == model.architecture
    if name == "inception_v3":
        assert loaded.net.transform_input == model.net.transform_input


def test_pretrained_weights_bring_imagenet_normalisation_and_inception_its_transform(
        pretrained_files):
    named = models.architecture(_p(model="inception_v3", weights="IMAGENET1K_V1"), (3, 64, 64), 2)
    assert named.transform_input and named.aux_logits and named.input_size == 299
    assert named.mean == models.IMAGENET_MEAN and named.std == models.IMAGENET_STD
    local = models.build(_p(model="inception_v3", input_size=80,
                            weights=str(pretrained_files["inception_v3"])), (3, 40, 40), 2)
    assert local.net.transform_input and local.architecture.mean == models.IMAGENET_MEAN
    scratch = models.architecture(_p(model="resnet18"), (3, 32, 32), 2)
    assert scratch.mean == () and not scratch.transform_input
    off = models.architecture(_p(model="resnet18", weights=str(pretrained_files["resnet18"]),
                                 normalize="none"), (3, 32, 32), 2)
    assert off.mean == ()
    # the adapter applies it: shards stay raw, evaluate/predict cannot forget it
    model = models.build(_p(model="resnet18", weights=str(pretrained_files["resnet18"])),
                         (1, 8, 8), 2)
    x = torch.rand(2, 1, 8, 8)
    mean = torch.tensor(models.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(models.IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(model.adapter(x), (x.expand(-1, 3, -1, -1) - mean) / std)
    with pytest.raises(models.ModelError, match="3 means"):
        models.build(_p(model="lenet5", normalize="imagenet"), (1, 32, 32), 2)


@pytest.mark.parametrize(("cut", "problem"), [
    (0, "(EOFError: the file ends early)"),
    (0.5, "(RuntimeError: PytorchStreamReader failed reading zip archive: failed finding "
          "central directory)"),
    (None, "(UnpicklingError: Unsupported operand 123)"),  # other bytes under its name
])
def test_an_unreadable_model_checkpoint_is_a_model_error_naming_it(tmp_path, cut, problem):
    model = models.build(_p(model="lenet5"), (1, 32, 32), 2)
    weights = tmp_path / inference.MODEL_FILE
    torch.save(model.state_dict(), weights)
    data = weights.read_bytes()
    weights.write_bytes(b"{not a checkpoint" if cut is None else data[:int(len(data) * cut)])
    (tmp_path / inference.CONFIG_FILE).write_text(
        untrained_card(model, _p(model="lenet5"), ["a", "b"]).to_json())
    with pytest.raises(ModelError) as caught:
        inference.load_model(tmp_path)  # as evaluate, predict and serve load it
    assert str(caught.value) == (f"{weights}: not a readable model checkpoint: truncated, or "
                                 f"not written by torch.save {problem}")


def test_a_model_card_without_architecture_is_refused(tmp_path):
    model = models.build(_p(model="lenet5"), (1, 32, 32), 2)
    torch.save(model.state_dict(), tmp_path / inference.MODEL_FILE)
    card = json.loads(untrained_card(model, _p(model="lenet5"), ["a", "b"]).to_json())
    del card["architecture"]
    (tmp_path / inference.CONFIG_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"config\.json: not as this oncopipe writes it "
                       r"\(architecture: required key is missing\); rerun the train stage"):
        inference.load_model(tmp_path)
