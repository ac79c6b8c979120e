"""Several training processes (DDP): start, wrap, agree, gather, check.

Every function is a no-op (or the identity) for one process, so the training loop reads the
same whatever the world size. The rules the loop relies on: decisions are made on rank 0 and
:func:`broadcast`; validation predictions are :func:`gather_predictions`-ed so metrics cover
the split exactly once; every rank's random generators are saved together
(:func:`rng_states`) so a resumed run continues the same streams; and at the end
:func:`check_in_sync` fails if the ranks' weights differ by a single bit.
"""

from __future__ import annotations

import hashlib
import logging
import os

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from oncopipe.learn.inference import Runtime
from oncopipe.learn.loader import ShardSampler

log = logging.getLogger(__name__)


def setup_runtime(threads: int) -> Runtime:
    """Init DDP under torchrun (``WORLD_SIZE`` > 1), choose the device, set CPU threads."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if threads:
        torch.set_num_threads(threads)
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


def wrap(model: nn.Module, rt: Runtime) -> nn.Module:
    """``model`` under DistributedDataParallel when there are several processes."""
    if rt.world == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[rt.device] if rt.cuda else None)


def sum_over_ranks(t: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """``t`` summed over every rank, in place."""
    if rt.world > 1:
        dist.all_reduce(t)
    return t


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


def finish(rt: Runtime) -> None:
    """Wait for every rank, then leave the process group (nothing for one process)."""
    if rt.world > 1:
        dist.barrier()
        dist.destroy_process_group()
