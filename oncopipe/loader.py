"""Reading shards for training: a torch ``Dataset`` over HDF5 shards and a shard-aware sampler.

Two things make this fast:

- :class:`ShardDataset` opens each shard once per process (a DataLoader worker gets its own
  handles after fork, since h5py handles must not cross processes) and implements
  ``__getitems__``, so a batch of consecutive rows of one shard is one slice read
  (``x[a:b]``) instead of ``batch_size`` small reads.
- :class:`ShardSampler` shuffles the *order of shards* and starts each shard at a random row
  (wrapping around), so reads stay sequential inside a shard while every epoch sees a new
  order. The shard stage already wrote the training split in a seeded random order, so a run
  of consecutive rows is a well-mixed batch. For DDP, each rank takes a contiguous slice of
  the epoch's order (equal lengths, padded by wrapping), which keeps its reads sequential too;
  it has ``set_epoch`` like :class:`torch.utils.data.DistributedSampler`.

Samples come back as numpy arrays in their stored dtype; :func:`to_float` scales uint8 by
1/255 on the device, which keeps host-to-device copies four times smaller.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from oncopipe.shards import read_index


class ShardDataset(Dataset):
    """Samples of one split, addressed by their position in the split's index."""

    def __init__(self, shard_dir: str | Path, split: str):
        self.shard_dir = Path(shard_dir)
        self.split = split
        index = read_index(self.shard_dir, split).sort(["shard", "row"])
        if len(index) == 0:
            raise ValueError(f"{self.shard_dir}: split {split!r} has no samples")
        self.shard_names: list[str] = sorted(set(index["shard"].to_list()))
        code = {n: i for i, n in enumerate(self.shard_names)}
        self.shard_of = np.array([code[s] for s in index["shard"].to_list()], dtype=np.int64)
        self.row_of = index["row"].to_numpy().astype(np.int64)
        self.labels = index["label"].to_numpy().astype(np.int64)
        self.sample_ids = index["sample_id"].to_list()
        self.patient_ids = index["patient_id"].to_list()
        self._handles: dict[int, h5py.File] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.row_of)

    def shard_ranges(self) -> list[tuple[int, int]]:
        """(start, stop) of each shard's samples in this dataset's positions."""
        bounds = np.flatnonzero(np.diff(self.shard_of)) + 1
        starts = [0, *bounds.tolist()]
        stops = [*bounds.tolist(), len(self)]
        return list(zip(starts, stops, strict=True))

    def _file(self, shard: int) -> h5py.File:
        if self._pid != os.getpid():  # forked into a worker: never reuse the parent's handles
            self._handles = {}
            self._pid = os.getpid()
        f = self._handles.get(shard)
        if f is None:
            path = self.shard_dir / self.shard_names[shard]
            try:
                f = h5py.File(path, "r")
            except OSError as exc:
                raise OSError(f"{path}: cannot open shard ({exc})") from None
            self._handles[shard] = f
        return f

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        f = self._file(int(self.shard_of[i]))
        return f["x"][int(self.row_of[i])], int(self.labels[i])

    def __getitems__(self, positions: Sequence[int]) -> list[tuple[np.ndarray, int]]:
        """Read runs of consecutive rows of one shard with one slice each."""
        pos = np.asarray(positions, dtype=np.int64)
        out: list[tuple[np.ndarray, int]] = []
        start = 0
        while start < len(pos):
            shard, row = self.shard_of[pos[start]], self.row_of[pos[start]]
            stop = start + 1
            while (stop < len(pos) and self.shard_of[pos[stop]] == shard
                   and self.row_of[pos[stop]] == row + (stop - start)):
                stop += 1
            block = self._file(int(shard))["x"][int(row):int(row) + (stop - start)]
            out.extend((block[k], int(self.labels[pos[start + k]])) for k in range(stop - start))
            start = stop
        return out

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._handles = {}


def collate(batch: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack numpy samples into one tensor without per-sample tensor creation."""
    x = np.stack([b[0] for b in batch])
    y = np.fromiter((b[1] for b in batch), dtype=np.int64, count=len(batch))
    return torch.from_numpy(x), torch.from_numpy(y)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 samples mean ``x / 255``; float samples are already in model range."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


class ShardSampler(Sampler[int]):
    """Shuffled shard order, sequential rows within a shard; DDP-aware via rank/num_replicas."""

    def __init__(self, dataset: ShardDataset, shuffle: bool = True, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.ranges = dataset.shard_ranges()
        self.n = len(dataset)
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.per_rank = -(-self.n // num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_order(self) -> np.ndarray:
        """All positions of this epoch, before splitting between ranks."""
        if not self.shuffle:
            return np.arange(self.n, dtype=np.int64)
        rng = np.random.default_rng([self.seed, self.epoch])
        parts = []
        for s in rng.permutation(len(self.ranges)):
            start, stop = self.ranges[s]
            offset = int(rng.integers(stop - start))
            rows = np.arange(start, stop, dtype=np.int64)
            parts.append(np.concatenate([rows[offset:], rows[:offset]]))
        return np.concatenate(parts)

    def __iter__(self) -> Iterator[int]:
        order = self.epoch_order()
        total = self.per_rank * self.num_replicas
        if total > len(order):  # pad by wrapping so every rank gets the same count
            order = np.concatenate([order, order[: total - len(order)]])
        mine = order[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]
        return iter(mine.tolist())

    def __len__(self) -> int:
        return self.per_rank
