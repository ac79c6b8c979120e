"""The generic training loop: shards in, best checkpoint + resolved config + dvclive logs out.

Shaped after torchvision's references/classification/train.py: one function per concern
(data, model, optimiser, schedule, one epoch, validation), the loop in :func:`train`.

- Devices: CUDA with bf16 autocast and channels_last (2D) when a GPU is present; CPU
  otherwise, deterministic for a fixed seed (``torch.use_deterministic_algorithms``). On GPU
  ``deterministic: true`` does the same (and turns ``cudnn.benchmark`` off); otherwise cuDNN
  picks its fastest algorithms.
- Several processes (DDP, ``nproc`` > 1 or ``torchrun``): each rank trains on a disjoint,
  equal-length part of the epoch's order; validation is sharded across ranks and the
  predictions gathered, so metrics cover the validation split exactly once; the early-stopping,
  plateau and best-model decisions are made once, on rank 0, and broadcast, so ranks cannot
  part ways; at the end the ranks check that their weights are identical.
- Schedules: ``exponential`` (staircase: ``lr * decay_rate ** (step // decay_steps)``, per
  optimiser step, as Keras' ExponentialDecay), ``plateau`` (on the early-stopping metric, per
  epoch), ``cosine`` (per step, to zero at the last epoch).
- Early stopping on ``val_loss`` / ``val_accuracy`` / ``val_balanced_accuracy`` with
  ``patience``; ``model.pt`` always holds the best epoch's weights.
- Resume: ``last.pt`` (model, optimiser, schedule, history, and every rank's CPU and CUDA RNG
  states) is written atomically after every epoch and removed when training ends; a run that
  finds one made with the same params continues from it (the DVC output is ``persist``-ed so
  an interrupted ``dvc repro`` keeps it). One made with other params is ignored and replaced.
  Nothing draws from numpy's or Python's global RNGs (the sampler and augmentation use
  generators seeded from seed, epoch and rank), so there is no state of theirs to keep.
- ``config.json`` records the resolved :class:`oncopipe.models.Architecture`;
  :func:`load_model` rebuilds exactly that network for evaluation and prediction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from oncopipe import metrics, models
from oncopipe.atomic import atomic_path, write_text
from oncopipe.augment import augment_batch
from oncopipe.cards import CONFIG_FILE, ModelCard, ShardSummary
from oncopipe.config import DatasetConfig, TrainParams
from oncopipe.loader import ShardDataset, ShardSampler, collate, to_float
from oncopipe.workers import loader_options

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
LAST_FILE = "last.pt"
PRECISE_BN_BATCHES = 32
PROGRESS_SECONDS = 30.0  # a progress line at most this often within an epoch
MAXIMISE = {"val_loss": False, "val_accuracy": True, "val_balanced_accuracy": True}


@dataclasses.dataclass
class Runtime:
    """Where this process runs: device, DDP rank and world size."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def setup_runtime(p: TrainParams) -> Runtime:
    """Init DDP under torchrun (``WORLD_SIZE`` > 1), choose the device, set CPU threads."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if p.threads:
        torch.set_num_threads(p.threads)
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if cuda and local >= torch.cuda.device_count():
            raise RuntimeError(f"local rank {local} has no GPU: {torch.cuda.device_count()} "
                               "visible; lower nproc (or --nproc-per-node)")
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        device = torch.device("cuda", local) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        return Runtime(device, dist.get_rank(), world)
    return Runtime(torch.device("cuda") if cuda else torch.device("cpu"))


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


def make_loader(ds: ShardDataset, batch_size: int, shuffle: bool, seed: int, rt: Runtime,
                num_workers: int, split_ranks: bool = True) -> tuple[DataLoader, ShardSampler]:
    """Batches of ``ds``; with ``split_ranks`` each DDP rank reads its own part (see
    :class:`ShardSampler`), otherwise every rank reads everything."""
    world, rank = (rt.world, rt.rank) if split_ranks else (1, 0)
    sampler = ShardSampler(ds, shuffle=shuffle, seed=seed, num_replicas=world, rank=rank)
    loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=collate,
                        drop_last=False, **loader_options(num_workers, rt.cuda))
    return loader, sampler


def make_optimizer(p: TrainParams, params) -> torch.optim.Optimizer:
    params = [q for q in params if q.requires_grad]
    if p.optimizer == "adam":
        return torch.optim.Adam(params, lr=p.lr, weight_decay=p.weight_decay)
    if p.optimizer == "sgd":
        return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum,
                               weight_decay=p.weight_decay)
    return torch.optim.RMSprop(params, lr=p.lr, momentum=p.momentum,
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
        mode = "max" if MAXIMISE[p.early_stopping_metric] else "min"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode=mode, factor=p.plateau_factor, patience=p.plateau_patience), False
    return None, False


def _autocast(rt: Runtime, amp: bool):
    if rt.cuda and amp:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _prepare_batch(x: torch.Tensor, rt: Runtime) -> torch.Tensor:
    x = to_float(x.to(rt.device, non_blocking=True))
    if rt.cuda and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


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
        x = _prepare_batch(x, rt)
        y = y.to(rt.device, non_blocking=True)
        x = augment_batch(x, p.augment, gen)
        with _autocast(rt, p.amp):
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
    if rt.world > 1:
        dist.all_reduce(stats)
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
        with _autocast(rt, amp):
            model(_prepare_batch(x, rt))
    for m, momentum in zip(layers, saved, strict=True):
        m.momentum = momentum
    model.train(was_training)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, rt: Runtime, amp: bool) -> tuple[np.ndarray,
                                                                                    np.ndarray]:
    """(probabilities (N, K) float64, labels (N,)) in the loader's order."""
    model.eval()
    probs, labels = [], []
    for x, y in loader:
        with _autocast(rt, amp):
            logits, _ = models.logits_and_aux(model(_prepare_batch(x, rt)))
        probs.append(torch.softmax(logits.float(), 1).double().cpu())
        labels.append(y)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def gather_predictions(prob: np.ndarray, y: np.ndarray, sampler: ShardSampler, rt: Runtime
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The whole split's (probabilities, labels) in dataset order, from every rank's part.

    Each rank predicted its contiguous part of the split (no padding), so concatenating the
    parts in rank order gives every sample exactly once.
    """
    if rt.world == 1:
        return prob, y
    counts = sampler.part_sizes()
    width = prob.shape[1] + 1
    mine = torch.zeros(max(counts), width, dtype=torch.float64, device=rt.device)
    mine[:len(y), :-1] = torch.from_numpy(prob)
    mine[:len(y), -1] = torch.from_numpy(y).double()
    parts = [torch.empty_like(mine) for _ in range(rt.world)]
    dist.all_gather(parts, mine)
    table = torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)]).cpu().numpy()
    return table[:, :-1], table[:, -1].astype(np.int64)


def broadcast(obj, rt: Runtime):
    """Rank 0's ``obj`` on every rank (itself when there is one process)."""
    if rt.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=rt.device if rt.cuda else None)
    return box[0]


def decide(state: dict, score: float, maximise: bool, patience: int) -> dict:
    """Whether this epoch improved on the best, the count of epochs since the last improvement
    and whether to stop: rank 0's call alone, which every rank then applies."""
    improved = score > state["best"] if maximise else score < state["best"]
    bad = 0 if improved else state["bad"] + 1
    return {"improved": bool(improved), "bad": bad, "stop": bad >= patience}


def rng_states(rt: Runtime) -> dict:
    """Every rank's CPU and CUDA generator states (lists in rank order)."""
    mine = {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(rt.device) if rt.cuda else None}
    every: list = [mine]
    if rt.world > 1:
        every = [None] * rt.world
        dist.all_gather_object(every, mine)
    return {"cpu": [e["cpu"].cpu() for e in every],
            "cuda": [e["cuda"].cpu() for e in every] if rt.cuda else []}


def restore_rng(saved: dict, rt: Runtime) -> None:
    """Put back this rank's generators from :func:`rng_states`' record."""
    if len(saved["cpu"]) != rt.world:
        log.warning("checkpoint written by %d processes, resuming with %d: the random streams "
                    "restart, so the result will differ from an uninterrupted run",
                    len(saved["cpu"]), rt.world)
        return
    torch.set_rng_state(saved["cpu"][rt.rank])
    if rt.cuda and saved["cuda"]:
        torch.cuda.set_rng_state(saved["cuda"][rt.rank], rt.device)


def state_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer, bit for bit."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_in_sync(model: nn.Module, rt: Runtime) -> None:
    """Fail if DDP ranks ended with different weights (they must be bitwise identical)."""
    if rt.world == 1:
        return
    digests: list = [None] * rt.world
    dist.all_gather_object(digests, state_digest(model))
    if len(set(digests)) != 1:
        raise RuntimeError(f"DDP ranks diverged: weight digests {digests}")


def validation_metrics(prob: np.ndarray, y: np.ndarray, weight: torch.Tensor | None) -> dict:
    """Loss (same class weights as training), accuracy and balanced accuracy."""
    logp = torch.log(torch.from_numpy(prob).clamp_min(1e-12))
    loss = nn.functional.nll_loss(logp, torch.from_numpy(y),
                                  weight=None if weight is None else weight.double().cpu())
    pred = prob.argmax(1)
    return {"loss": float(loss), "accuracy": float((pred == y).mean()),
            "balanced_accuracy": metrics.balanced_accuracy(y, pred, prob.shape[1])}


# --------------------------------------------------------------------------------------------
# Checkpoints and model loading
# --------------------------------------------------------------------------------------------


def _save(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_model(model_dir: str | Path, device: torch.device | str = "cpu"
               ) -> tuple[models.Classifier, ModelCard]:
    """The trained model of ``model_dir`` (eval mode) and its card (config.json)."""
    model_dir = Path(model_dir)
    cfg_path, weights_path = model_dir / CONFIG_FILE, model_dir / MODEL_FILE
    for path in (cfg_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (did the train stage run?)")
    card = ModelCard.read(model_dir)
    model = models.assemble(card.architecture)  # the trained weights follow: never download
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval(), card


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def train(cfg: DatasetConfig, shard_dir: Path, model_dir: Path, live_dir: Path) -> ModelCard:
    """Train ``cfg.train`` on the shards; write ``model_dir`` and dvclive logs to ``live_dir``.

    Returns the model card (also ``model_dir/config.json``).
    """
    from dvclive import Live  # imported here: only the train stage needs it

    p = cfg.train
    rt = setup_runtime(p)
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
    net = nn.parallel.DistributedDataParallel(model, device_ids=[rt.device] if rt.cuda else None) \
        if rt.world > 1 else model
    weight = summary.class_weights
    weight = torch.tensor(weight, dtype=torch.float32, device=rt.device) if weight else None
    criterion = nn.CrossEntropyLoss(weight=weight)
    opt = make_optimizer(p, model.parameters())
    sched, per_step = make_schedule(p, opt, len(train_loader))
    n_trainable = sum(q.numel() for q in model.parameters() if q.requires_grad)
    say("model %s: %d trainable of %d parameters; %s lr %g, schedule %s, %d steps/epoch",
        p.model, n_trainable, sum(q.numel() for q in model.parameters()), p.optimizer,
        p.lr, p.schedule, len(train_loader))

    key = run_hash(p, cfg.seed, summary.params_hash)
    maximise = MAXIMISE[p.early_stopping_metric]
    state = {"epoch": -1, "best": -math.inf if maximise else math.inf, "best_epoch": -1,
             "bad": 0, "history": []}
    last = model_dir / LAST_FILE
    if last.is_file():
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
        if ckpt.get("run") == key:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            if sched is not None:
                sched.load_state_dict(ckpt["schedule"])
            restore_rng(ckpt["rng"], rt)
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
        prob, y = gather_predictions(prob, y, val_sampler, rt)
        # decided once, on rank 0, from the whole validation split; every rank follows it
        verdict = None
        if rt.main:
            va = validation_metrics(prob, y, weight)
            score = va[p.early_stopping_metric.removeprefix("val_")]
            verdict = {"val": va, "score": score,
                       **decide(state, score, maximise, p.patience)}
        verdict = broadcast(verdict, rt)
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
        rng = rng_states(rt)  # a collective: every rank takes part
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
    check_in_sync(model, rt)
    card = ModelCard(
        dataset=cfg.name, task=cfg.task, profile=cfg.profile, seed=cfg.seed,
        class_names=class_names, sample_shape=shape, layout=summary.layout,
        dtype=summary.dtype, normalisation=summary.normalisation,
        shards_params_hash=summary.params_hash, run=key,
        best_epoch=state["best_epoch"] + 1, epochs_run=state["epoch"] + 1,
        best_value=round(state["best"], 6), train=p, processes=rt.world,
        architecture=model.architecture,
    )
    if rt.main:
        write_text(model_dir / CONFIG_FILE, card.to_json())
        last.unlink(missing_ok=True)
        live.summary["best_epoch"] = card.best_epoch
        # the validation figures of the kept epoch: what sweeps are compared on (never test)
        kept = next(r for r in state["history"] if r["epoch"] == card.best_epoch)
        live.summary["best_val"] = {k.removeprefix("val/"): v for k, v in kept.items()
                                    if k.startswith("val/")}
        live.end()
        log.info("wrote %s and %s (best epoch %d, %s %.4f)", model_dir / MODEL_FILE,
                 model_dir / CONFIG_FILE, card.best_epoch, p.early_stopping_metric,
                 state["best"])
    if rt.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    train_ds.close()
    val_ds.close()
    return card


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
