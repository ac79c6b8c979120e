"""Training throughput: is the loader ever the bottleneck? Two uses.

1. In ``python -m benchmarks`` (comparisons ``train-step-2d``, ``train-step-3d``): on the
   machine at hand, the time of the loader alone, the loader + augmentation (what the trainer
   does before the model), and one model step (forward, backward, Adam) of the demo models,
   for the same number of batches. The loader rows should be a small fraction of the step.
2. GPU readiness, run as a script on a CUDA machine::

       python -m benchmarks.training_throughput --write   # records docs/benchmarks.md
       python -m benchmarks.training_throughput --quick   # smoke test, CPU is fine

   Trains ResNet-50 at 64 px (bf16 autocast, channels_last) and the MosMed 3D CNN at
   128 x 128 x 64 from HDF5 shards through the real loader (workers, pinned memory, prefetch
   as ``oncopipe/learn/workers.py`` resolves them) and reports samples/s and the fraction of the
   time the GPU waits for data: the time spent blocked on the next batch over the whole
   time, with a device synchronise after every step (so the GPU is idle exactly while the
   trainer waits). The goal is a wait fraction <= 10% (GPU busy >= 90%).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from benchmarks import harness
from benchmarks.harness import Comparison, Method
from benchmarks.shard_read import smooth_images, write_prepared_and_shards
from oncopipe.core.config import AugmentParams, TrainParams
from oncopipe.learn import models
from oncopipe.learn.loader import ShardDataset, ShardSampler, collate, to_float
from oncopipe.learn.workers import loader_options, resolve_workers
from oncopipe.train.augment import augment_batch

AUGMENT = AugmentParams(hflip=True, vflip=True, rotate90=True)


@dataclass(frozen=True)
class Case:
    """One training set-up: model, stored sample shape and dtype, batch size."""

    name: str
    model: str
    shape: tuple[int, ...]
    dtype: str
    batch: int
    width: float = 1.0

    @property
    def label(self) -> str:
        return f"{self.name}, {' x '.join(map(str, self.shape))} {self.dtype}"


GPU_CASES = (
    Case("ResNet-50", "resnet50", (3, 64, 64), "uint8", 256),
    Case("3D CNN (MosMed reference)", "cnn3d", (1, 64, 128, 128), "float16", 8),
)


def make_shards(root: Path, case: Case, n: int) -> Path:
    """``n`` stored samples of ``case`` as shards (uint8 images, or float16 volumes in [0, 1])."""
    data = smooth_images(n, case.shape, 0)
    if case.dtype != "uint8":  # in place, in the target dtype: no float64 copy of the set
        data = data.astype(case.dtype)
        data *= np.asarray(1 / 255, dtype=case.dtype)
    return write_prepared_and_shards(root, data)


class Trainer:
    """The train stage's per-batch work, without its bookkeeping: device transfer, uint8 to
    float, augmentation, forward/backward under bf16 autocast on CUDA, Adam step."""

    def __init__(self, case: Case, device: torch.device, amp: bool = True):
        p = TrainParams(model=case.model, width=case.width, weights="none", augment=AUGMENT)
        self.device, self.cuda = device, device.type == "cuda"
        self.channels_last = self.cuda and len(case.shape) == 3
        self.net = models.build(p, case.shape, 2).to(device)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1.0e-4)
        self.loss = nn.CrossEntropyLoss()
        self.amp = amp and self.cuda
        self.gen = torch.Generator().manual_seed(0)

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        x = to_float(x.to(self.device, non_blocking=True))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return augment_batch(x, AUGMENT, self.gen)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.amp
                    else contextlib.nullcontext())
        with autocast:
            loss = self.loss(self.net(x).float(), y.to(self.device, non_blocking=True))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.cuda:
            torch.cuda.synchronize()
        return float(loss.detach())


def make_loader(shards: Path, batch: int, workers: int, cuda: bool) -> DataLoader:
    ds = ShardDataset(shards, "train")
    return DataLoader(ds, batch_size=batch, sampler=ShardSampler(ds, seed=0),
                      collate_fn=collate, drop_last=True, **loader_options(workers, cuda))


def measure(case: Case, shards: Path, device: torch.device, workers: int, steps: int,
            warmup: int) -> dict:
    """Train ``steps`` batches after ``warmup``; samples/s and the data-wait fraction."""
    cuda = device.type == "cuda"
    trainer = Trainer(case, device)
    loader = make_loader(shards, case.batch, workers, cuda)
    done, wait, total = 0, 0.0, 0.0
    while done < warmup + steps:
        batches = iter(loader)
        while done < warmup + steps:
            start = time.perf_counter()
            try:
                x, y = next(batches)
            except StopIteration:
                break
            got = time.perf_counter()
            trainer.step(trainer.batch(x), y)
            if done >= warmup:
                wait += got - start
                total += time.perf_counter() - start
            done += 1
    precision = ("bf16 autocast" + (", channels_last" if trainer.channels_last else "")
                 if trainer.amp else "fp32")
    return {"case": case.label, "device": str(device), "precision": precision,
            "workers": resolve_workers(workers, cuda),
            "batch": case.batch, "steps": steps,
            "samples/s": round(steps * case.batch / total, 1),
            "step ms": round((total - wait) / steps * 1e3, 2),
            "data wait": f"{wait / total:.1%}", "GPU busy": f"{1 - wait / total:.1%}"
            if cuda else "(no GPU)"}


# --------------------------------------------------------------------------------------------
# The comparison in `python -m benchmarks`: loader, loader + augmentation, model step
# --------------------------------------------------------------------------------------------


def _comparison(key: str, title: str, work: Path, case: Case, n_batches: int) -> Comparison:
    shards = make_shards(work / key, case, case.batch * n_batches)
    loader = make_loader(shards, case.batch, 0, False)
    trainer = Trainer(case, torch.device("cpu"))
    ready = [(trainer.batch(x), y) for x, y in loader]

    def load():
        return sum(len(y) for _, y in loader)

    def load_augment():
        return sum(len(trainer.batch(x)) for x, _ in loader)

    def steps():
        return [trainer.step(x, y) for x, y in ready]

    return Comparison(key, title, "sample", case.batch * n_batches, [
        Method("loader + to float32 + augmentation (hflip, vflip, rotate90)", load_augment),
        Method("loader alone (`ShardDataset` + `ShardSampler`, 0 workers)", load),
        Method(f"model step: {case.model} (width {case.width}) forward + backward + Adam",
               steps),
    ], note="Not alternatives: the rows split one training step, so there is no output check.")


def comparisons(work: Path, quick: bool) -> list[Comparison]:
    n2, n3 = (2, 1) if quick else (8, 4)
    case2 = Case("PCam demo", "lenet5", (3, 32, 32) if quick else (3, 96, 96), "uint8", 32, 0.5)
    case3 = Case("MosMed demo", "cnn3d", (1, 16, 32, 32) if quick else (1, 64, 128, 128), "float16",
                 2 if quick else 4, 0.125)
    return [
        _comparison("train-step-2d", f"Training batches of {case2.batch} x {case2.shape} uint8 "
                    "(PCam demo model), CPU", work, case2, n2),
        _comparison("train-step-3d", f"Training batches of {case3.batch} x {case3.shape} "
                    "float16 (MosMed demo model), CPU", work, case3, n3),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="GPU readiness: training samples/s, data wait")
    ap.add_argument("--quick", action="store_true", help="tiny shapes and few steps (CPU ok)")
    ap.add_argument("--workers", type=int, default=-1, help="DataLoader workers (-1: auto)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 50, quick 3)")
    ap.add_argument("--write", action="store_true", help="record the table in the docs")
    ap.add_argument("--doc", type=Path, default=harness.DOC,
                    help="the Markdown file --write updates (default docs/benchmarks.md)")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps = args.steps or (3 if args.quick else 50)
    cases = GPU_CASES
    if args.quick:
        cases = (replace(GPU_CASES[0], shape=(3, 32, 32), batch=8),
                 replace(GPU_CASES[1], shape=(1, 16, 32, 32), batch=2, width=0.25))
    records = []
    with tempfile.TemporaryDirectory(prefix="oncopipe-train-bench-") as tmp:
        for k, case in enumerate(cases):
            n = case.batch * (steps + 2)  # one epoch: warm-up + timed steps
            shards = make_shards(Path(tmp) / str(k), case, n)
            records.append(measure(case, shards, device, args.workers, steps, warmup=2))
            print(harness.records_table(records[-1:]), flush=True)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU only"
    text = (f"{name}, torch {torch.__version__}; {steps} timed steps after 2 warm-up steps"
            f"{' (quick mode)' if args.quick else ''}.\n\n{harness.records_table(records)}")
    print(text)
    if args.write:
        harness.write_block(args.doc, "training-gpu", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
