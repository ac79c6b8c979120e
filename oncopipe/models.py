"""Models by name, behind one input adapter, with transfer-learning options.

Every model is an :class:`Classifier`: ``adapter -> backbone -> head``. The
:class:`InputAdapter` is the single place that fits stored samples to a network: 1-channel
images go into 3-channel ImageNet networks by repeating the channel (pretrained filters stay
meaningful), volumes go into 2D networks with depth folded into channels (a learnable 1x1
convolution maps them to the channels the network expects), and inputs are resized to the
network's input side (299 for Inception-v3). No model has its own copy of this logic.

``weights``: ``none`` (random init), a torchvision weights name such as ``IMAGENET1K_V2``
(downloaded by torchvision where there is network), or a path to a local ``.pth``/``.pt``
state dict of the torchvision architecture (loaded with ``weights_only=True``).
``finetune``: ``whole`` trains everything with a new linear classifier; ``head`` freezes the
backbone (kept in eval mode, so batch-norm statistics stay those of the weights) and trains a
new head of global pooling and two dense layers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from oncopipe.config import TrainParams

log = logging.getLogger(__name__)

TORCHVISION = ("resnet18", "resnet50", "resnet101", "vgg16", "inception_v3")
SMALL = ("lenet5", "cnn7", "cnn3d")
HEAD_HIDDEN = 256
AUX_WEIGHT = 0.4  # Inception-v3's auxiliary-classifier loss weight (Szegedy et al.)


class ModelError(ValueError):
    """A model cannot be built for this input (bad name, weights file, shape)."""


def _w(channels: int, width: float) -> int:
    return max(1, round(channels * width))


# --------------------------------------------------------------------------------------------
# Input adapter
# --------------------------------------------------------------------------------------------


class InputAdapter(nn.Module):
    """Fit (N, C, H, W) or (N, C, D, H, W) inputs to a network's dims, channels and size."""

    def __init__(self, sample_shape: tuple[int, ...], dims: int, channels: int, size: int):
        """``channels`` 0: as stored (after folding depth); :attr:`channels` is the result."""
        super().__init__()
        in_dims = len(sample_shape) - 1
        if in_dims not in (2, 3):
            raise ModelError(f"samples must be (C, H, W) or (C, D, H, W), got {sample_shape}")
        if dims == 3 and in_dims == 2:
            raise ModelError("a 3D network needs volumes (layout CDHW); these samples are 2D")
        self.fold_depth = in_dims == 3 and dims == 2
        c = sample_shape[0] * (sample_shape[1] if self.fold_depth else 1)
        channels = channels or c
        self.channels = channels
        self.repeat = channels if c == 1 and channels > 1 else 1
        self.mix = (nn.Conv2d(c, channels, 1) if dims == 2 else nn.Conv3d(c, channels, 1)) \
            if c not in (1, channels) else None
        self.size = size
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fold_depth:
            x = x.flatten(1, 2)
        if self.repeat > 1:
            x = x.expand(-1, self.repeat, *x.shape[2:])
        elif self.mix is not None:
            x = self.mix(x)
        if self.size and tuple(x.shape[-2:]) != (self.size, self.size):
            if self.dims == 2:
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                  align_corners=False, antialias=True)
            else:
                x = F.interpolate(x, size=(x.shape[2], self.size, self.size),
                                  mode="trilinear", align_corners=False)
        return x


# --------------------------------------------------------------------------------------------
# Small networks
# --------------------------------------------------------------------------------------------


class LeNet5(nn.Module):
    """LeCun et al. 1998, with max pooling and ReLU; adaptive pooling admits any input size."""

    def __init__(self, in_channels: int, n_classes: int, width: float = 1.0):
        super().__init__()
        c1, c2, f1, f2 = _w(6, width), _w(16, width), _w(120, width), _w(84, width)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True),
            nn.AdaptiveAvgPool2d(5), nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(c2 * 25, f1), nn.ReLU(inplace=True), nn.Linear(f1, f2),
            nn.ReLU(inplace=True), nn.Linear(f2, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class CNN7(nn.Module):
    """The ISIC reference CNN: conv 32-64-64-128-256-512 (3x3, batch norm, ReLU, 2x2 max pool
    after each), global pooling, dropout 0.5, dense 1024, dropout 0.5, classifier."""

    CHANNELS = (32, 64, 64, 128, 256, 512)

    def __init__(self, in_channels: int, n_classes: int, width: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for c in self.CHANNELS:
            c = _w(c, width)
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]
            c_in = c
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        hidden = _w(1024, width)
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(c_in, hidden), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class CNN3D(nn.Module):
    """The MosMed reference 3D CNN (Keras example): conv3d 64-64-128-256, each followed by max
    pooling and batch norm, global average pooling, dense 512, dropout 0.3, classifier."""

    CHANNELS = (64, 64, 128, 256)

    def __init__(self, in_channels: int, n_classes: int, width: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for c in self.CHANNELS:
            c = _w(c, width)
            layers += [nn.Conv3d(c_in, c, 3, padding=1), nn.ReLU(inplace=True),
                       nn.MaxPool3d(2, ceil_mode=True), nn.BatchNorm3d(c)]
            c_in = c
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool3d(1), nn.Flatten())
        hidden = _w(512, width)
        self.classifier = nn.Sequential(
            nn.Linear(c_in, hidden), nn.ReLU(inplace=True), nn.Dropout(0.3),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# --------------------------------------------------------------------------------------------
# torchvision networks
# --------------------------------------------------------------------------------------------


def _torchvision(name: str, weights: str) -> nn.Module:
    """A torchvision network with its ImageNet classifier, weights as requested."""
    extra = {"aux_logits": True, "init_weights": True} if name == "inception_v3" else {}
    if weights == "none":
        return torchvision.models.get_model(name, weights=None, **extra)
    path = Path(weights)
    if path.suffix in (".pth", ".pt") or path.exists():
        if not path.is_file():
            raise ModelError(f"{path}: weights file not found")
        net = torchvision.models.get_model(name, weights=None, **extra)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(f"{path}: cannot load a state dict ({exc})") from None
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if "AuxLogits" not in k]:
            raise ModelError(f"{path}: not a {name} state dict (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
        return net
    try:
        enum = torchvision.models.get_model_weights(name)[weights]
    except KeyError:
        options = ", ".join(w.name for w in torchvision.models.get_model_weights(name))
        raise ModelError(f"weights {weights!r} unknown for {name} (torchvision has: {options}; "
                         "or give 'none' or a .pth path)") from None
    try:
        return torchvision.models.get_model(name, weights=enum)
    except OSError as exc:  # URLError derives from OSError
        raise ModelError(f"cannot download {name} weights {weights} ({exc}); download them "
                         "where there is network and give the .pth path instead") from None


def _head(features: int, n_classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(features, HEAD_HIDDEN), nn.ReLU(inplace=True),
                         nn.Dropout(0.5), nn.Linear(HEAD_HIDDEN, n_classes))


def _replace_classifier(net: nn.Module, name: str, n_classes: int, finetune: str) -> nn.Module:
    """Put a new classifier on ``net``; returns the new trainable head module."""
    make = (lambda f: _head(f, n_classes)) if finetune == "head" \
        else (lambda f: nn.Linear(f, n_classes))
    if name.startswith("resnet") or name == "inception_v3":
        net.fc = make(net.fc.in_features)  # after the network's global average pooling
        if name == "inception_v3":
            if finetune == "head":
                net.aux_logits, net.AuxLogits = False, None
            else:
                net.AuxLogits.fc = nn.Linear(net.AuxLogits.fc.in_features, n_classes)
        return net.fc
    if name == "vgg16":
        if finetune == "head":
            net.avgpool = nn.AdaptiveAvgPool2d(1)
            net.classifier = make(512)
        else:
            net.classifier[6] = nn.Linear(net.classifier[6].in_features, n_classes)
        return net.classifier
    raise ModelError(f"unknown torchvision model {name!r}")


# --------------------------------------------------------------------------------------------
# The classifier wrapper and the builder
# --------------------------------------------------------------------------------------------


class Classifier(nn.Module):
    """adapter -> network. With a frozen backbone the backbone stays in eval mode."""

    def __init__(self, adapter: InputAdapter, net: nn.Module, head: nn.Module | None):
        super().__init__()
        self.adapter = adapter
        self.net = net
        self.head = head  # set only when the backbone is frozen
        self.frozen = head is not None

    def forward(self, x: torch.Tensor):
        return self.net(self.adapter(x))

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.frozen and mode:
            self.net.eval()
            self.head.train(mode)
        return self


def network_input(name: str, input_size: int) -> tuple[int, int, int]:
    """(dims, channels or 0 for 'as stored', side) a network expects."""
    if name in TORCHVISION:
        return 2, 3, input_size or (299 if name == "inception_v3" else 0)
    return (3 if name == "cnn3d" else 2), 0, input_size


def build(p: TrainParams, sample_shape: tuple[int, ...], n_classes: int) -> Classifier:
    """The model named in ``p`` for samples of ``sample_shape`` (channel-first)."""
    dims, channels, size = network_input(p.model, p.input_size)
    if p.model in TORCHVISION:
        if p.width != 1.0:
            raise ModelError(f"width applies to {', '.join(SMALL)} only, not {p.model}")
        adapter = InputAdapter(sample_shape, dims, channels, size)
        net = _torchvision(p.model, p.weights)
        head = _replace_classifier(net, p.model, n_classes, p.finetune)
        if p.finetune == "head":
            if p.weights == "none":
                log.warning("finetune: head on a randomly initialised %s trains a head on "
                            "random features; set weights to use pretrained ones", p.model)
            for q in net.parameters():
                q.requires_grad_(False)
            for q in head.parameters():
                q.requires_grad_(True)
            return Classifier(adapter, net, head)
        return Classifier(adapter, net, None)
    if p.weights != "none":
        raise ModelError(f"{p.model} has no pretrained weights; set weights: none")
    if p.finetune == "head":
        raise ModelError(f"{p.model} trains from scratch; finetune: head needs a pretrained "
                         f"torchvision model ({', '.join(TORCHVISION)})")
    adapter = InputAdapter(sample_shape, dims, channels, size)
    cls = {"lenet5": LeNet5, "cnn7": CNN7, "cnn3d": CNN3D}[p.model]
    return Classifier(adapter, cls(adapter.channels, n_classes, p.width), None)


def logits_and_aux(output) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inception-v3 returns (logits, aux_logits) in training mode; others return logits."""
    if isinstance(output, tuple):
        return output[0], output[1]
    return output, None
