"""The generic training loop: shards in, best checkpoint + resolved config + dvclive logs out.

Shaped after torchvision's references/classification/train.py: one function per concern
(model, optimiser, schedule, one epoch, validation), the loop in :func:`train`. Running a
model (device, autocast, batches, prediction, loading) is :mod:`oncopipe.learn.inference`'s, shared
with evaluation and prediction; the collectives of several processes are
:mod:`oncopipe.train.distributed`'s.

- Devices: CUDA with bf16 autocast and channels_last (2D) when a GPU is present; CPU
  otherwise, deterministic for a fixed seed (``torch.use_deterministic_algorithms``). On GPU
  ``deterministic: true`` does the same (and turns ``cudnn.benchmark`` off); otherwise cuDNN
  picks its fastest algorithms.
- Several processes (DDP, ``nproc`` > 1 or ``torchrun``): each rank trains on a disjoint,
  equal-length part of the epoch's order; validation is sharded across ranks and the
  predictions gathered, so metrics cover the validation split exactly once; the early-stopping,
  plateau and best-model decisions are made once, on rank 0 (:func:`decide`), and broadcast, so
  ranks cannot part ways; at the end the ranks check that their weights are identical.
- Schedules: ``exponential`` (staircase: ``lr * decay_rate ** (step // decay_steps)``, per
  optimiser step, as Keras' ExponentialDecay), ``plateau`` (on the early-stopping metric, per
  epoch), ``cosine`` (per step, to zero at the last epoch).
- Early stopping on ``val_loss`` / ``val_accuracy`` / ``val_balanced_accuracy`` with
  ``patience``; ``model.pt`` always holds the best epoch's weights.
- Resume: ``last.pt`` (model, optimiser, schedule, history, and every rank's CPU and CUDA RNG
  states) is written atomically after every epoch and removed when training ends; a run that
  finds one made with the same params continues from it (the DVC output is ``persist``-ed so
  an interrupted ``dvc repro`` keeps it). One made with other params is ignored and replaced.
  One that cannot be read (truncated, garbage) stops the run with a :class:`ModelError` saying
  to delete it: starting over in silence would throw away the interrupted run's epochs.
  Nothing draws from numpy's or Python's global RNGs (the sampler and augmentation use
  generators seeded from seed, epoch and rank), so there is no state of theirs to keep.
- ``config.json`` records the resolved :class:`oncopipe.core.cards.Architecture`;
  :func:`oncopipe.learn.inference.load_model` rebuilds exactly that network for evaluation and
  prediction.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from oncopipe.core import provenance
from oncopipe.core.atomic import atomic_path, write_text
from oncopipe.core.cards import CodeVersion, ModelCard, ShardSummary
from oncopipe.core.config import DatasetConfig, TrainParams
from oncopipe.core.errors import ModelError
from oncopipe.learn import metrics, models
from oncopipe.learn.inference import (
    CONFIG_FILE,
    MODEL_FILE,
    Runtime,
    autocast,
    make_loader,
    predict,
    prepare_batch,
)
from oncopipe.learn.loader import ShardDataset
from oncopipe.train import distributed
from oncopipe.train.augment import augment_batch

log = logging.getLogger(__name__)

LAST_FILE = "last.pt"
PRECISE_BN_BATCHES = 32
PROGRESS_SECONDS = 30.0  # a progress line at most this often within an epoch
MAXIMISE = {"val_loss": False, "val_accuracy": True, "val_balanced_accuracy": True}


def configure_determinism(p: TrainParams, rt: Runtime) -> None:
    """Deterministic algorithms on CPU always, on GPU with ``deterministic: true``.

    On GPU that also needs cuBLAS's fixed workspace (``CUBLAS_WORKSPACE_CONFIG``, read when
    cuBLAS starts, so set before the first matrix product) and no cuDNN autotuning, whose
    choice of algorithm can differ between runs.
    """
    if rt.cuda and not p.deterministic:
        torch.backends.cudnn.benchmark = True
        return
    if rt.cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def run_hash(p: TrainParams, seed: int, shard_hash: str) -> str:
    """Identifies a training run; a checkpoint is resumed only by a run with the same hash."""
    blob = json.dumps({"train": dataclasses.asdict(p), "seed": seed, "shards": shard_hash},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------


def learning_rate(p: TrainParams, world: int) -> float:
    """The optimiser's learning rate: ``lr``, or with ``lr_scaling: linear`` ``lr`` times the
    number of processes (Goyal et al. 2017: the global batch grows with them)."""
    return p.lr * world if p.lr_scaling == "linear" else p.lr


def make_optimizer(p: TrainParams, params, world: int = 1) -> torch.optim.Optimizer:
    params = [q for q in params if q.requires_grad]
    lr = learning_rate(p, world)
    if p.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=p.weight_decay)
    if p.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=p.momentum,
                               weight_decay=p.weight_decay)
    return torch.optim.RMSprop(params, lr=lr, momentum=p.momentum,
                               weight_decay=p.weight_decay)


def make_schedule(p: TrainParams, opt: torch.optim.Optimizer, steps_per_epoch: int):
    """Returns (scheduler or None, steps per optimiser step: True, or per epoch: False)."""
    if p.schedule == "exponential":
        rate, every = p.decay_rate, p.decay_steps
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: rate ** (s // every)), True
    if p.schedule == "cosine":
        total = max(1, p.epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total), True
    if p.schedule == "plateau":
        mode: Literal["min", "max"] = "max" if MAXIMISE[p.early_stopping_metric] else "min"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode=mode, factor=p.plateau_factor, patience=p.plateau_patience), False
    return None, False


def train_one_epoch(model: nn.Module, loader: DataLoader, criterion: nn.Module,
                    opt: torch.optim.Optimizer, sched, per_step: bool, p: TrainParams,
                    rt: Runtime, gen: torch.Generator) -> dict:
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=rt.device)
    correct = torch.zeros((), dtype=torch.int64, device=rt.device)
    seen = 0
    last_report = time.perf_counter()
    for step, (x, y) in enumerate(loader, 1):
        if rt.main and time.perf_counter() - last_report > PROGRESS_SECONDS:
            last_report = time.perf_counter()
            log.info("  batch %d/%d, running loss %.4f", step, len(loader),
                     float(loss_sum) / max(seen, 1))
        x = prepare_batch(x, rt)
        y = y.to(rt.device, non_blocking=True)
        x = augment_batch(x, p.augment, gen)
        with autocast(rt, p.amp):
            logits, aux = models.logits_and_aux(model(x))
            loss = criterion(logits.float(), y)
            if aux is not None:
                loss = loss + models.AUX_WEIGHT * criterion(aux.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None and per_step:
            sched.step()
        loss_sum += loss.detach().double() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    stats = torch.stack([loss_sum, correct.double(),
                         torch.tensor(float(seen), dtype=torch.float64, device=rt.device)])
    distributed.sum_over_ranks(stats, rt)
    return {"loss": float(stats[0] / stats[2]), "accuracy": float(stats[1] / stats[2])}


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, loader: DataLoader, rt: Runtime, amp: bool,
                        max_batches: int = PRECISE_BN_BATCHES) -> None:
    """Replace batch-norm running statistics with exact averages over training batches.

    Running averages with momentum lag behind weights that change quickly (short demo runs,
    high learning rates): the network then scores well in training mode and badly in eval
    mode. Recomputing them with the final weights ("precise BN", Wu & Johnson 2021) fixes
    that; it does not affect training (train-mode forward uses batch statistics). Layers of a
    frozen backbone keep the statistics of their weights.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
              and m.track_running_stats and m.weight is not None and m.weight.requires_grad]
    if not layers:
        return
    saved = [m.momentum for m in layers]
    was_training = model.training
    model.train()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the exact mean over the batches seen
    for i, (x, _) in enumerate(loader):
        if i >= max_batches:
            break
        with autocast(rt, amp):
            model(prepare_batch(x, rt))
    for m, momentum in zip(layers, saved, strict=True):
        m.momentum = momentum
    model.train(was_training)


def decide(state: dict, score: float, maximise: bool, patience: int) -> dict:
    """Whether this epoch improved on the best, the count of epochs since the last improvement
    and whether to stop: rank 0's call alone, which every rank then applies."""
    improved = score > state["best"] if maximise else score < state["best"]
    bad = 0 if improved else state["bad"] + 1
    return {"improved": bool(improved), "bad": bad, "stop": bad >= patience}


def validation_metrics(prob: np.ndarray, y: np.ndarray, weight: torch.Tensor | None) -> dict:
    """Loss (same class weights as training), accuracy and balanced accuracy."""
    logp = torch.log(torch.from_numpy(prob).clamp_min(1e-12))
    loss = nn.functional.nll_loss(logp, torch.from_numpy(y),
                                  weight=None if weight is None else weight.double().cpu())
    pred = prob.argmax(1)
    return {"loss": float(loss), "accuracy": float((pred == y).mean()),
            "balanced_accuracy": metrics.balanced_accuracy(y, pred, prob.shape[1])}


def _save(obj: dict, path: Path) -> None:
    """Save a checkpoint atomically; a full disk is a :class:`~oncopipe.core.errors.DiskFullError`.

    torch's writer reports a full disk as ``RuntimeError: unexpected pos`` (a file object
    would give the ``OSError``, but also another archive name inside, so other bytes): it is
    told apart by the room left beside the checkpoint.
    """
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:
            if shutil.disk_usage(tmp.parent).free >= _tensor_bytes(obj):
                raise
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp)) from exc


def _tensor_bytes(obj: object) -> int:
    """Bytes of the tensors in a (nested) checkpoint: about what saving it takes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def train(cfg: DatasetConfig, shard_dir: Path, model_dir: Path, live_dir: Path) -> ModelCard:
    """Train ``cfg.train`` on the shards; write ``model_dir`` and dvclive logs to ``live_dir``.

    Returns the model card (also ``model_dir/config.json``).
    """
    from dvclive import Live  # imported here: only the train stage needs it

    p = cfg.train
    rt = distributed.setup_runtime(p.threads)
    configure_determinism(p, rt)
    summary = ShardSummary.read(shard_dir)
    class_names = summary.class_names
    shape = summary.sample_shape
    train_ds, val_ds = ShardDataset(shard_dir, "train"), ShardDataset(shard_dir, "val")
    say = log.info if rt.main else log.debug  # one account of the run, not one per rank
    say("read %s: train %d, val %d samples of %s; %d classes; device %s x%d",
        shard_dir, len(train_ds), len(val_ds), shape, len(class_names), rt.device, rt.world)
    train_loader, sampler = make_loader(train_ds, p.batch_size, True, cfg.seed, rt, p.num_workers)
    val_loader, val_sampler = make_loader(val_ds, p.batch_size * 2, False, cfg.seed, rt,
                                          p.num_workers)
    # every rank recomputes batch-norm statistics over the same batches: identical results
    bn_loader, _ = make_loader(train_ds, p.batch_size, False, cfg.seed, rt, 0, split_ranks=False)

    torch.manual_seed(cfg.seed)
    model = models.build(p, shape, len(class_names)).to(rt.device)
    if rt.cuda and len(shape) == 3:
        model = model.to(memory_format=torch.channels_last)
    net = distributed.wrap(model, rt)
    class_weights = summary.class_weights
    weight = torch.tensor(class_weights, dtype=torch.float32, device=rt.device) \
        if class_weights else None
    criterion = nn.CrossEntropyLoss(weight=weight)
    opt = make_optimizer(p, model.parameters(), rt.world)
    sched, per_step = make_schedule(p, opt, len(train_loader))
    n_trainable = sum(q.numel() for q in model.parameters() if q.requires_grad)
    say("model %s: %d trainable of %d parameters; %s lr %g, schedule %s, %d steps/epoch",
        p.model, n_trainable, sum(q.numel() for q in model.parameters()), p.optimizer,
        learning_rate(p, rt.world), p.schedule, len(train_loader))

    key = run_hash(p, cfg.seed, summary.params_hash)
    maximise = MAXIMISE[p.early_stopping_metric]
    state: dict[str, Any] = {"epoch": -1, "best": -math.inf if maximise else math.inf,
                             "best_epoch": -1, "bad": 0, "history": []}
    last = model_dir / LAST_FILE
    if last.is_file():
        ckpt = read_last(last)
        if ckpt.get("run") == key:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            if sched is not None:
                sched.load_state_dict(ckpt["schedule"])
            distributed.restore_rng(ckpt["rng"], rt)
            state = json.loads(ckpt["state"])
            say("resuming from %s after epoch %d", last, state["epoch"] + 1)
        else:
            say("ignoring %s: written by a run with other params", last)
    model_dir.mkdir(parents=True, exist_ok=True)

    # A fresh log every time, with the checkpoint's history replayed on resume: DVC deletes
    # the stage's metric and plot outputs before rerunning it, so dvclive's own resume would
    # start the curves again at step 0.
    live = Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) \
        if rt.main else None
    if live is not None:
        live.log_params({"dataset": cfg.name, "seed": cfg.seed, **_flat(dataclasses.asdict(p))})
        for row in state["history"]:
            _log_epoch(live, row)
    for epoch in range(state["epoch"] + 1, p.epochs):
        started = time.perf_counter()
        sampler.set_epoch(epoch)
        gen = torch.Generator().manual_seed(_seed(cfg.seed, epoch, rt.rank))
        lr = opt.param_groups[0]["lr"]
        tr = train_one_epoch(net, train_loader, criterion, opt, sched, per_step, p, rt, gen)
        recompute_batchnorm(model, bn_loader, rt, p.amp)
        prob, y = predict(model, val_loader, rt, p.amp)
        prob, y = distributed.gather_predictions(prob, y, val_sampler, rt)
        # decided once, on rank 0, from the whole validation split; every rank follows it
        verdict = None
        if rt.main:
            va = validation_metrics(prob, y, weight)
            score = va[p.early_stopping_metric.removeprefix("val_")]
            verdict = {"val": va, "score": score,
                       **decide(state, score, maximise, p.patience)}
        verdict = distributed.broadcast(verdict, rt)
        va, score = verdict["val"], verdict["score"]
        if sched is not None and not per_step:
            sched.step(score)
        state["bad"] = verdict["bad"]
        if verdict["improved"]:
            state.update(best=score, best_epoch=epoch)
            if rt.main:
                _save(model.state_dict(), model_dir / MODEL_FILE)  # model: not the DDP wrapper
        state["epoch"] = epoch
        row = {"epoch": epoch + 1, "learning_rate": lr,
               **{f"train/{k}": v for k, v in tr.items()},
               **{f"val/{k}": v for k, v in va.items()}}
        state["history"].append(row)
        rng = distributed.rng_states(rt)  # a collective: every rank takes part
        if live is not None:
            _log_epoch(live, row)
            _save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                   "schedule": sched.state_dict() if sched is not None else {},
                   "rng": rng, "run": key, "state": json.dumps(state)}, last)
        say("epoch %d/%d: train loss %.4f acc %.3f | val loss %.4f acc %.3f bal %.3f%s (%.1fs)",
            epoch + 1, p.epochs, tr["loss"], tr["accuracy"], va["loss"], va["accuracy"],
            va["balanced_accuracy"], " *" if verdict["improved"] else "",
            time.perf_counter() - started)
        if verdict["stop"]:
            say("early stopping: no %s improvement for %d epochs", p.early_stopping_metric,
                p.patience)
            break

    if state["best_epoch"] < 0:
        raise RuntimeError(f"{p.early_stopping_metric} was never finite: training diverged "
                           f"(lr {p.lr:g} too high?); no model written to {model_dir}")
    distributed.check_in_sync(model, rt)
    card = ModelCard(
        dataset=cfg.name, task=cfg.task, profile=cfg.profile, seed=cfg.seed,
        class_names=class_names, sample_shape=shape, layout=summary.layout,
        dtype=summary.dtype, normalisation=summary.normalisation,
        shards_params_hash=summary.params_hash, run=key,
        best_epoch=state["best_epoch"] + 1, epochs_run=state["epoch"] + 1,
        best_value=round(state["best"], 6), train=p, processes=rt.world,
        architecture=model.architecture, raw=summary.raw,
        code=CodeVersion(**provenance.code_version()),
    )
    if live is not None:  # rank 0
        write_text(model_dir / CONFIG_FILE, card.to_json())
        last.unlink(missing_ok=True)
        live.summary["best_epoch"] = card.best_epoch
        # the validation figures of the kept epoch: what sweeps are compared on (never test)
        kept = next(r for r in state["history"] if r["epoch"] == card.best_epoch)
        live.summary["best_val"] = {k.removeprefix("val/"): round(v, 6)
                                    for k, v in kept.items() if k.startswith("val/")}
        for last_epoch in ("train", "val", "learning_rate"):  # the curves keep every epoch
            live.summary.pop(last_epoch, None)
        live.end()
        log.info("wrote %s and %s (best epoch %d, %s %.4f)", model_dir / MODEL_FILE,
                 model_dir / CONFIG_FILE, card.best_epoch, p.early_stopping_metric,
                 state["best"])
    distributed.finish(rt)
    train_ds.close()
    val_ds.close()
    return card


def read_last(path: Path) -> dict[str, Any]:
    """The resume checkpoint ``path``; a :class:`ModelError` saying to delete it when it cannot
    be read (a run killed while the disk was full, a file copied in by hand)."""
    fix = "; delete it to start this training run over from its first epoch"
    try:
        ckpt = models.load_checkpoint(path, "training checkpoint")
    except ModelError as exc:
        raise ModelError(f"{exc}{fix}") from None
    if not isinstance(ckpt, dict):
        raise ModelError(f"{path}: not a training checkpoint (holds a "
                         f"{type(ckpt).__name__}, not a mapping){fix}")
    return ckpt


def _log_epoch(live, row: dict) -> None:
    for name, value in row.items():
        if name != "epoch":
            live.log_metric(name, round(value, 6))
    live.next_step()


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
