"""Running a trained model: the device, autocast, batches onto the device, prediction, loading.

What evaluation, ``oncopipe predict`` and ``oncopipe serve`` need of a model, apart from the
training loop (:mod:`oncopipe.train.training` imports this module, never the other way), so that an
edit to the loop or to augmentation reruns no evaluation and prediction loads no trainer.

- Devices: CUDA with bf16 autocast (when ``amp``) and channels_last for 2D batches when a GPU
  is present; CPU otherwise.
- A model folder holds :data:`MODEL_FILE` (the best epoch's weights) and :data:`CONFIG_FILE`
  (the model card, with the resolved :class:`oncopipe.core.cards.Architecture`);
  :func:`load_model` rebuilds exactly that network.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from oncopipe.core.cards import CONFIG_FILE, ModelCard
from oncopipe.core.errors import ModelError
from oncopipe.learn import models
from oncopipe.learn.loader import ShardDataset, ShardSampler, collate, to_float
from oncopipe.learn.workers import loader_options

MODEL_FILE = "model.pt"


@dataclasses.dataclass
class Runtime:
    """Where this process runs: device, DDP rank and world size (one process: 0 and 1)."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def local_runtime() -> Runtime:
    """One process: the GPU when there is one, else the CPU."""
    return Runtime(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def autocast(rt: Runtime, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA with ``amp``; nothing otherwise (CPU runs in float32)."""
    if rt.cuda and amp:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_batch(x: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """A stored batch on the device in model range (channels_last for 2D on CUDA)."""
    x = to_float(x.to(rt.device, non_blocking=True))
    if rt.cuda and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def make_loader(ds: ShardDataset, batch_size: int, shuffle: bool, seed: int, rt: Runtime,
                num_workers: int, split_ranks: bool = True) -> tuple[DataLoader, ShardSampler]:
    """Batches of ``ds``; with ``split_ranks`` each DDP rank reads its own part (see
    :class:`ShardSampler`), otherwise every rank reads everything."""
    world, rank = (rt.world, rt.rank) if split_ranks else (1, 0)
    sampler = ShardSampler(ds, shuffle=shuffle, seed=seed, num_replicas=world, rank=rank)
    loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=collate,
                        drop_last=False, **loader_options(num_workers, rt.cuda))
    return loader, sampler


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, rt: Runtime, amp: bool) -> tuple[np.ndarray,
                                                                                    np.ndarray]:
    """(probabilities (N, K) float64, labels (N,)) in the loader's order."""
    model.eval()
    probs, labels = [], []
    for x, y in loader:
        with autocast(rt, amp):
            logits, _ = models.logits_and_aux(model(prepare_batch(x, rt)))
        probs.append(torch.softmax(logits.float(), 1).double().cpu())
        labels.append(y)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def load_model(model_dir: str | Path, device: torch.device | str = "cpu"
               ) -> tuple[models.Classifier, ModelCard]:
    """The trained model of ``model_dir`` (eval mode) and its card (config.json)."""
    model_dir = Path(model_dir)
    cfg_path, weights_path = model_dir / CONFIG_FILE, model_dir / MODEL_FILE
    for path in (cfg_path, weights_path):
        if not path.is_file():
            raise ModelError(f"{path}: not found (did the train stage run?)")
    card = ModelCard.read(model_dir)
    model = models.assemble(card.architecture)  # the trained weights follow: never download
    state = models.load_checkpoint(weights_path, "model checkpoint")
    model.load_state_dict(state)
    return model.to(device).eval(), card
