"""One new raw input -> class probabilities, with the model trained by the pipeline.

The input is preprocessed by the dataset's own ``preprocess_one`` (the same code as its
``prepare`` step, see docs/architecture.md), so a prediction sees exactly what training saw.
The result is a dict (for ``--json``) and a sentence such as ``72.1% abnormal, 27.9% normal``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from oncopipe import config, datasets
from oncopipe.loader import to_float
from oncopipe.training import load_model


def predict_array(model_dir: Path, sample: np.ndarray) -> dict:
    """Probabilities for one sample already in the manifest's array layout."""
    model, card = load_model(model_dir)
    expected = tuple(card["sample_shape"])
    if tuple(sample.shape) != expected:
        raise ValueError(f"input preprocessed to shape {tuple(sample.shape)}, but the model in "
                         f"{model_dir} was trained on {expected}")
    with torch.no_grad():
        x = to_float(torch.from_numpy(np.ascontiguousarray(sample))[None])
        prob = torch.softmax(model(x).float(), 1)[0].double().numpy()
    names = card["class_names"]
    order = np.argsort(-prob, kind="stable")
    return {
        "dataset": card["dataset"],
        "task": card["task"],
        "predicted": names[int(order[0])],
        "probabilities": {names[i]: round(float(prob[i]), 6) for i in range(len(names))},
    }


def predict_file(dataset: str, path: Path, model_dir: Path | None = None,
                 point: tuple[float, float, float] | None = None,
                 params: Path = config.PARAMS_FILE) -> dict:
    """Preprocess ``path`` with ``dataset``'s ``preprocess_one`` and predict it."""
    cfg = config.load(dataset, params)
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: input not found")
    sample = datasets.module(dataset, "prepare").preprocess_one(cfg, Path(path), point)
    result = predict_array(model_dir or Path("models") / dataset, sample)
    result["input"] = str(path)
    if point is not None:
        result["point"] = list(point)
    return result


def in_words(result: dict) -> str:
    """``72.1% abnormal, 27.9% normal`` (most likely first)."""
    items = sorted(result["probabilities"].items(), key=lambda kv: -kv[1])
    return ", ".join(f"{100 * p:.1f}% {name}" for name, p in items)
