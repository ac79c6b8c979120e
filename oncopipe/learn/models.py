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
``normalize``: pretrained ImageNet weights expect inputs normalised with ImageNet's mean and
std. The adapter applies that normalisation (``auto``: whenever a torchvision network gets
pretrained weights, named or local file; ``imagenet``: always; ``none``: never), so shards stay
raw and no caller can forget it. Inception-v3's pretrained weights also need torchvision's
``transform_input`` (ImageNet-normalised -> the [-1, 1] range they were trained on); it is on
exactly when a pretrained Inception-v3 gets ImageNet normalisation, as torchvision does.

Everything that shapes the network is resolved once into an :class:`Architecture`, recorded
in the model's config.json by training and rebuilt from there by
:func:`oncopipe.learn.inference.load_model`, so evaluation and prediction run the trained network.
``finetune``: ``whole`` trains everything with a new linear classifier; ``head`` freezes the
backbone (kept in eval mode, so batch-norm statistics stay those of the weights) and trains a
new head of global pooling and two dense layers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from oncopipe.core.cards import Architecture
from oncopipe.core.config import TrainParams
from oncopipe.core.errors import ModelError

log = logging.getLogger(__name__)

TORCHVISION = ("resnet18", "resnet50", "resnet101", "vgg16", "inception_v3")
SMALL = ("lenet5", "cnn7", "cnn3d")
HEAD_HIDDEN = 256
AUX_WEIGHT = 0.4  # Inception-v3's auxiliary-classifier loss weight (Szegedy et al.)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _w(channels: int, width: float) -> int:
    return max(1, round(channels * width))


# --------------------------------------------------------------------------------------------
# Input adapter
# --------------------------------------------------------------------------------------------


class InputAdapter(nn.Module):
    """Fit (N, C, H, W) or (N, C, D, H, W) inputs to a network's dims, channels and size."""

    mean: torch.Tensor  # buffers, registered only when normalising
    std: torch.Tensor

    def __init__(self, sample_shape: tuple[int, ...], dims: int, channels: int, size: int,
                 mean: tuple[float, ...] = (), std: tuple[float, ...] = ()):
        """``channels`` 0: as stored (after folding depth); :attr:`channels` is the result.

        ``mean``/``std`` (one per network input channel, or empty): normalise the fitted input.
        """
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
        self.normalise = bool(mean)
        if mean:
            if len(mean) != channels or len(std) != channels:
                raise ModelError(f"normalisation has {len(mean)} means and {len(std)} stds for "
                                 f"a network input of {channels} channels")
            view = (1, channels) + (1,) * dims
            # not persistent: config.json (the Architecture) is their one record
            self.register_buffer("mean", torch.tensor(mean).view(view), persistent=False)
            self.register_buffer("std", torch.tensor(std).view(view), persistent=False)

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
        if self.normalise:
            x = (x - self.mean) / self.std
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


def _weights_kind(name: str, weights: str):
    """``"none"``, ``"file"`` or torchvision's weights enum for ``weights``."""
    if weights == "none":
        return "none"
    path = Path(weights)
    if path.suffix in (".pth", ".pt") or path.exists():
        return "file"
    try:
        return torchvision.models.get_model_weights(name)[weights]
    except KeyError:
        options = ", ".join(w.name for w in torchvision.models.get_model_weights(name))
        raise ModelError(f"weights {weights!r} unknown for {name} (torchvision has: {options}; "
                         "or give 'none' or a .pth path)") from None


def _normalisation(p: TrainParams, kind) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the adapter applies; empty for none."""
    mode = p.normalize
    if mode == "auto":
        mode = "imagenet" if p.model in TORCHVISION and kind != "none" else "none"
    if mode == "none":
        return (), ()
    if kind not in ("none", "file"):  # named weights carry their own preprocessing
        tf = kind.transforms()
        return tuple(float(v) for v in tf.mean), tuple(float(v) for v in tf.std)
    return IMAGENET_MEAN, IMAGENET_STD


def architecture(p: TrainParams, sample_shape: tuple[int, ...], n_classes: int
                 ) -> Architecture:
    """Resolve ``p`` for samples of ``sample_shape`` into the network's :class:`Architecture`."""
    if p.model not in TORCHVISION + SMALL:
        raise ModelError(f"unknown model {p.model!r}")
    if p.model in TORCHVISION:
        if p.width != 1.0:
            raise ModelError(f"width applies to {', '.join(SMALL)} only, not {p.model}")
        kind = _weights_kind(p.model, p.weights)
    else:
        if p.weights != "none":
            raise ModelError(f"{p.model} has no pretrained weights; set weights: none")
        if p.finetune == "head":
            raise ModelError(f"{p.model} trains from scratch; finetune: head needs a pretrained "
                             f"torchvision model ({', '.join(TORCHVISION)})")
        kind = "none"
    mean, std = _normalisation(p, kind)
    inception = p.model == "inception_v3"
    return Architecture(
        model=p.model, sample_shape=tuple(sample_shape), n_classes=n_classes, width=p.width,
        finetune=p.finetune, input_size=network_input(p.model, p.input_size)[2],
        mean=mean, std=std,
        transform_input=inception and kind != "none" and mean == IMAGENET_MEAN,
        aux_logits=inception and p.finetune == "whole")


def load_checkpoint(path: Path, what: str) -> Any:
    """``torch.load`` of ``path`` (``weights_only=True``: tensors and plain containers only).

    A file that cannot be read or whose bytes are not such a checkpoint (truncated by a full
    disk or a killed copy, another file saved under its name) is a :class:`ModelError` naming
    the file, ``what`` it should hold and the problem, not torch's multi-line advice.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if isinstance(exc, OSError) and exc.filename:  # opening the file failed, not its bytes
            raise ModelError(f"{path}: cannot read the {what} ({exc.strerror})") from None
        raise ModelError(f"{path}: not a readable {what}: truncated, or not written by "
                         f"torch.save ({_load_problem(exc)})") from None


def _load_problem(exc: Exception) -> str:
    """One short line for what ``torch.load`` raised: the exception's type and the part of
    its message that says what is wrong with the bytes."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if "WeightsUnpickler error:" in text:  # weights_only's refusal: the operand or type
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0].split(". ", 1)[0][:200] if lines else ""
    if not first and isinstance(exc, EOFError):
        first = "the file ends early"
    return f"{type(exc).__name__}{': ' + first if first else ''}"


def _torchvision(arch: Architecture, weights: str) -> nn.Module:
    """A torchvision network with its ImageNet classifier, weights as requested."""
    name = arch.model
    kind = _weights_kind(name, weights)
    extra = {"transform_input": arch.transform_input} if name == "inception_v3" else {}
    if kind in ("none", "file"):
        if name == "inception_v3":
            extra.update(aux_logits=True, init_weights=True)
        net = torchvision.models.get_model(name, weights=None, **extra)
        if kind == "none":
            return net
        path = Path(weights)
        if not path.is_file():
            raise ModelError(f"{path}: weights file not found")
        state = load_checkpoint(path, "state dict")
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if "AuxLogits" not in k]:
            raise ModelError(f"{path}: not a {name} state dict (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
        return net
    try:
        return torchvision.models.get_model(name, weights=kind, **extra)
    except OSError as exc:  # URLError derives from OSError
        raise ModelError(f"cannot download {name} weights {weights} ({exc}); download them "
                         "where there is network and give the .pth path instead") from None


def _head(features: int, n_classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(features, HEAD_HIDDEN), nn.ReLU(inplace=True),
                         nn.Dropout(0.5), nn.Linear(HEAD_HIDDEN, n_classes))


def _replace_classifier(module: nn.Module, arch: Architecture) -> nn.Module:
    """Put a new classifier on ``module``; returns the new trainable head module."""
    net: Any = module  # torchvision's classes: their attributes are typed only as Module
    name, n_classes = arch.model, arch.n_classes
    make = (lambda f: _head(f, n_classes)) if arch.finetune == "head" \
        else (lambda f: nn.Linear(f, n_classes))
    if name.startswith("resnet") or name == "inception_v3":
        net.fc = make(net.fc.in_features)  # after the network's global average pooling
        if name == "inception_v3":
            if arch.aux_logits:
                net.AuxLogits.fc = nn.Linear(net.AuxLogits.fc.in_features, n_classes)
            else:
                net.aux_logits, net.AuxLogits = False, None
        return net.fc
    if name == "vgg16":
        if arch.finetune == "head":
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

    def __init__(self, adapter: InputAdapter, net: nn.Module, head: nn.Module | None,
                 arch: Architecture):
        super().__init__()
        self.adapter = adapter
        self.net = net
        self.head = head  # set only when the backbone is frozen
        self.architecture = arch

    def forward(self, x: torch.Tensor):
        return self.net(self.adapter(x))

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.head is not None and mode:
            self.net.eval()
            self.head.train(mode)
        return self


def network_input(name: str, input_size: int) -> tuple[int, int, int]:
    """(dims, channels or 0 for 'as stored', side) a network expects."""
    if name in TORCHVISION:
        return 2, 3, input_size or (299 if name == "inception_v3" else 0)
    return (3 if name == "cnn3d" else 2), 0, input_size


def assemble(arch: Architecture, weights: str = "none") -> Classifier:
    """The network described by ``arch``, initialised from ``weights``."""
    if arch.model not in TORCHVISION + SMALL:
        raise ModelError(f"unknown model {arch.model!r}")
    dims, channels, _ = network_input(arch.model, arch.input_size)
    adapter = InputAdapter(arch.sample_shape, dims, channels, arch.input_size, arch.mean,
                           arch.std)
    if arch.model in TORCHVISION:
        net = _torchvision(arch, weights)
        head = _replace_classifier(net, arch)
        if arch.finetune != "head":
            return Classifier(adapter, net, None, arch)
        for q in net.parameters():
            q.requires_grad_(False)
        for q in head.parameters():
            q.requires_grad_(True)
        return Classifier(adapter, net, head, arch)
    cls = {"lenet5": LeNet5, "cnn7": CNN7, "cnn3d": CNN3D}[arch.model]
    return Classifier(adapter, cls(adapter.channels, arch.n_classes, arch.width), None, arch)


def build(p: TrainParams, sample_shape: tuple[int, ...], n_classes: int) -> Classifier:
    """The model named in ``p`` for samples of ``sample_shape`` (channel-first)."""
    arch = architecture(p, sample_shape, n_classes)
    if arch.finetune == "head" and p.weights == "none":
        log.warning("finetune: head on a randomly initialised %s trains a head on random "
                    "features; set weights to use pretrained ones", p.model)
    return assemble(arch, p.weights)


def logits_and_aux(output) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inception-v3 returns (logits, aux_logits) in training mode; others return logits."""
    if isinstance(output, tuple):
        return output[0], output[1]
    return output, None
