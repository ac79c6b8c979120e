"""DataLoader worker count and host-to-device options, resolved for the machine.

``num_workers: -1`` (the default) means "choose": on a CUDA machine the loader runs in worker
processes (up to 8, sharing the cores between the GPUs of the node) with pinned memory and
prefetching, so batches are read and collated while the GPU computes; on a CPU-only machine
the batch is read in the training process (0 workers), because the samples are already
decoded arrays (a batch is one read per shard it touches, a copy from the page cache for
contiguous shards: see :mod:`oncopipe.learn.loader`) and a worker would only add inter-process
copies and compete with torch's threads for the same cores. Results
do not depend on the choice: augmentation draws from the trainer's generator, not from the
workers.
"""

from __future__ import annotations

import os

import torch

AUTO = -1
MAX_WORKERS = 8
PREFETCH_FACTOR = 4  # batches in flight per worker: covers a slow read behind a fast step


def resolve_workers(num_workers: int, cuda: bool) -> int:
    """The worker count ``num_workers`` stands for (``-1``: chosen for this machine)."""
    if num_workers != AUTO:
        return num_workers
    if not cuda:
        return 0
    per_gpu = (os.cpu_count() or 1) // max(1, torch.cuda.device_count())
    return max(1, min(MAX_WORKERS, per_gpu - 1))


def loader_options(num_workers: int, cuda: bool) -> dict:
    """Keyword arguments for ``torch.utils.data.DataLoader``: workers, pinning, prefetch."""
    workers = resolve_workers(num_workers, cuda)
    options: dict = {"num_workers": workers, "pin_memory": cuda}
    if workers > 0:
        options.update(persistent_workers=True, prefetch_factor=PREFETCH_FACTOR)
    return options
