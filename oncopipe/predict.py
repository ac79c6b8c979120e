"""One new raw input -> class probabilities, with the model trained by the pipeline.

The input is preprocessed by the dataset's own ``preprocess_one`` (the same code as its
``prepare`` step, see docs/architecture.md), so a prediction sees exactly what training saw.
The result is a dict (for ``--json``) and a sentence such as ``72.1% abnormal, 27.9% normal``;
its ``warnings`` list says what was unusual about an input that was still accepted.

:class:`Predictor` holds a loaded model for many predictions (``oncopipe serve`` keeps one
per dataset); :func:`predict_file` is the command line's one-shot path. Both build the result
with :func:`answer`, so the JSON of the web API and of ``oncopipe predict --json`` agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from torch import nn

from oncopipe import datasets
from oncopipe.core import config, limits
from oncopipe.core.errors import InputError, ModelError
from oncopipe.ingest import input_warnings
from oncopipe.learn.inference import load_model
from oncopipe.learn.loader import to_float
from oncopipe.learn.models import logits_and_aux
from oncopipe.serve import saliency


class _Answer(TypedDict):
    dataset: str
    task: str
    predicted: str  # the most likely class
    probabilities: dict[str, float]  # by class name, rounded to 6 decimals


class Prediction(_Answer, total=False):
    """One answer, as ``oncopipe predict --json`` prints it and the web API returns it."""

    input: str  # the file's name
    point: list[float]  # x, y, z in patient mm, for datasets that take one
    warnings: list[str]  # valid but unusual input (oncopipe.ingest.input_warnings)


class Predictor:
    """The model of ``model_dir``, loaded once, in eval mode with its weights frozen, for many
    predictions.

    Safe to use from several threads at once: forward passes share nothing but the frozen
    weights, and a saliency map's hook acts only in the thread that put it
    (:mod:`oncopipe.serve.saliency`), so concurrent requests neither wait for nor see each other.
    """

    def __init__(self, model_dir: str | Path):
        self.model_dir = Path(model_dir)
        self.model, self.card = load_model(self.model_dir)
        self.model.requires_grad_(False)  # no autograd graph but the saliency map's head
        _conv3d_on_onednn(self.model)
        self._layer: str | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self.card.class_names)

    def tensor(self, sample: np.ndarray) -> torch.Tensor:
        """``sample`` (the manifest's array layout) as a batch of one, in model range."""
        expected = self.card.sample_shape
        if tuple(sample.shape) != expected:
            raise ModelError(f"input preprocessed to shape {tuple(sample.shape)}, but the model "
                             f"in {self.model_dir} was trained on {expected}")
        return to_float(torch.from_numpy(np.ascontiguousarray(sample))[None])

    def probabilities(self, sample: np.ndarray) -> np.ndarray:
        x = self.tensor(sample)
        with torch.no_grad():
            logits, _ = logits_and_aux(self.model(x))
        return _softmax(logits)

    def predict(self, sample: np.ndarray) -> Prediction:
        """Probabilities for one sample already in the manifest's array layout."""
        return self._result(self.probabilities(sample))

    @property
    def feature_layer(self) -> str:
        """The module Grad-CAM reads (:func:`oncopipe.serve.saliency.feature_module`), found once
        per model by a probe pass on zeros of the sample's shape."""
        if self._layer is None:
            probe = torch.zeros(1, *self.card.sample_shape)
            self._layer = saliency.feature_module(self.model, probe)
        return self._layer

    def explain(self, sample: np.ndarray) -> tuple[Prediction, np.ndarray, str]:
        """:meth:`predict`'s answer (the same numbers) and the Grad-CAM map of the predicted
        class over the sample's grid, from one forward pass and a backward pass through the
        head; and the name of the layer the map comes from."""
        x, layer = self.tensor(sample), self.feature_layer
        logits, cam_of = saliency.forward_with_cam(self.model, x, layer)
        result = self._result(_softmax(logits))
        return result, cam_of(self.class_names.index(result["predicted"])), layer

    def _result(self, prob: np.ndarray) -> Prediction:
        names = self.class_names
        order = np.argsort(-prob, kind="stable")
        return {
            "dataset": self.card.dataset,
            "task": self.card.task,
            "predicted": names[int(order[0])],
            "probabilities": {names[i]: round(float(prob[i]), 6) for i in range(len(names))},
        }


class _OneDNNConv3d(nn.Conv3d):
    """A ``Conv3d`` that takes oneDNN on CPU for a batch of one too.

    PyTorch picks its CPU convolution by a size rule made for 2D: for a batch of one it
    counts N x C x D x H, not W, so a 64 x 128 x 128 CT volume goes to the reference kernel
    (``slow_conv3d``), which takes about twice the CPU time of oneDNN; a batch of two (as in
    training and evaluation) already gets oneDNN.
    """

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor | None) -> torch.Tensor:
        if (input.device.type != "cpu" or input.dtype != torch.float32 or input.dim() != 5
                or self.padding_mode != "zeros" or isinstance(self.padding, str)):
            return super()._conv_forward(input, weight, bias)
        return torch.mkldnn_convolution(input.contiguous(), weight.contiguous(), bias,
                                        self.padding, self.stride, self.dilation, self.groups)


def _conv3d_on_onednn(model: nn.Module) -> None:
    """Every plain ``Conv3d`` of ``model`` as :class:`_OneDNNConv3d` (same weights), where
    this torch has oneDNN."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch, "mkldnn_convolution")):
        return
    for module in model.modules():
        if type(module) is nn.Conv3d:
            module.__class__ = _OneDNNConv3d


def _softmax(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.float(), 1)[0].double().numpy()


def predict_array(model_dir: Path, sample: np.ndarray) -> Prediction:
    """Probabilities for one sample already in the manifest's array layout."""
    return Predictor(model_dir).predict(sample)


def preprocess(cfg: config.DatasetConfig, path: Path,
               point: tuple[float, float, float] | None = None) -> np.ndarray:
    """``path`` through its dataset's ``preprocess_one`` (as the ``prepare`` stage stores it)."""
    if not Path(path).exists():
        raise InputError(f"{path}: input not found")
    return datasets.spec(cfg.name).preprocess_one(cfg, Path(path), point)


def answer(predictor: Predictor, sample: np.ndarray, input_name: str,
           point: tuple[float, float, float] | None = None,
           warnings: Sequence[str] = ()) -> Prediction:
    """The result as ``oncopipe predict --json`` prints it (and the web API returns it);
    ``warnings``: what :func:`oncopipe.ingest.input_warnings.warn` said while preprocessing."""
    return about_input(predictor.predict(sample), input_name, point, warnings)


def about_input(result: Prediction, input_name: str,
                point: tuple[float, float, float] | None = None,
                warnings: Sequence[str] = ()) -> Prediction:
    """``result`` (of :meth:`Predictor.predict` or :meth:`Predictor.explain`) with what the
    answer says of its input: the name, the point and the warnings."""
    result["input"] = input_name
    if point is not None:
        result["point"] = [float(v) for v in point]
    result["warnings"] = list(warnings)
    return result


def predict_file(dataset: str, path: Path, model_dir: Path | None = None,
                 point: tuple[float, float, float] | None = None,
                 params: Path = config.PARAMS_FILE) -> Prediction:
    """Preprocess ``path`` with ``dataset``'s ``preprocess_one`` and predict it."""
    cfg = datasets.load_config(dataset, params)
    limits.activate(cfg.limits)
    with input_warnings.collecting() as warnings:
        sample = preprocess(cfg, Path(path), point)
    return answer(Predictor(model_dir or Path("models") / dataset), sample, str(path), point,
                  warnings)


def in_words(result: Prediction) -> str:
    """``72.1% abnormal, 27.9% normal`` (most likely first).

    A model is never certain: a probability that would round to 100.0% or 0.0% is shown as
    ``>99.9%`` or ``<0.1%`` (the JSON keeps the number).
    """
    items = sorted(result["probabilities"].items(), key=lambda kv: -kv[1])
    return ", ".join(f"{percent(p)} {name}" for name, p in items)


def percent(p: float) -> str:
    """``p`` as a percentage with one decimal, never ``100.0%`` or ``0.0%``."""
    if p >= 0.9995:
        return ">99.9%"
    if p < 0.0005:
        return "<0.1%"
    return f"{100 * p:.1f}%"
