"""Reading shards for training: a torch ``Dataset`` over HDF5 shards and a shard-aware sampler.

Shuffling is real: :class:`ShardSampler` draws a fresh uniform permutation of the whole split
every epoch (seeded by seed and epoch), so no two samples are bound to share batches. What
keeps it fast is the reading side: :class:`ShardDataset` opens each shard once per process (a
DataLoader worker gets its own handles after fork, since h5py handles must not cross
processes) and implements ``__getitems__``, which sorts a batch's rows by shard and row and
reads each shard's rows at once, not ``batch_size`` separate reads. Shards are contiguous by
default: their samples are then read through a memory map of the HDF5 file's data block (a
row is a copy from the page cache, with none of HDF5's per-selection cost, which is what made
random rows slow); compressed shards have one sample per chunk (see :mod:`oncopipe.shard.shards`)
and are read with one HDF5 selection per shard. docs/benchmarks.md has the figures against the
sequential reads this replaced.

For DDP, each rank takes a disjoint, equal-length part of the epoch's permutation (the
remainder, fewer than ``num_replicas`` samples, is left out of that epoch, a different few each
epoch), so every rank runs the same number of steps; it has ``set_epoch`` like
:class:`torch.utils.data.DistributedSampler`. Without shuffling (validation, test) each rank
gets a contiguous part and every sample is read exactly once, parts differing by at most one.

Samples come back as numpy arrays in their stored dtype; :func:`to_float` scales uint8 by
1/255 on the device, which keeps host-to-device copies four times smaller.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from oncopipe.core.errors import InputError
from oncopipe.shard.shards import read_index


class ShardDataset(Dataset):
    """Samples of one split, addressed by their position in the split's index."""

    def __init__(self, shard_dir: str | Path, split: str):
        self.shard_dir = Path(shard_dir)
        self.split = split
        index = read_index(self.shard_dir, split).sort(["shard", "row"])
        if len(index) == 0:
            raise InputError(f"{self.shard_dir}: split {split!r} has no samples")
        self.shard_names: list[str] = sorted(set(index["shard"].to_list()))
        code = {n: i for i, n in enumerate(self.shard_names)}
        self.shard_of = np.array([code[s] for s in index["shard"].to_list()], dtype=np.int64)
        self.row_of = index["row"].to_numpy().astype(np.int64)
        self.labels = index["label"].to_numpy().astype(np.int64)
        self.sample_ids = index["sample_id"].to_list()
        self.patient_ids = index["patient_id"].to_list()
        self._handles: dict[int, h5py.File] = {}
        self._arrays: dict[int, np.ndarray | h5py.Dataset] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.row_of)

    def _file(self, shard: int) -> h5py.File:
        f = self._handles.get(shard)
        if f is None:
            path = self.shard_dir / self.shard_names[shard]
            try:
                f = h5py.File(path, "r")
            except OSError as exc:
                raise OSError(f"{path}: cannot open shard ({exc})") from None
            self._handles[shard] = f
        return f

    def _samples(self, shard: int) -> np.ndarray | h5py.Dataset:
        """The shard's ``x``: a read-only memory map when HDF5 stored it contiguous (the
        default, ``compression: none``), so a read is a copy from the page cache with no HDF5
        call; the HDF5 dataset when it is chunked (compressed)."""
        if self._pid != os.getpid():  # forked into a worker: never reuse the parent's handles
            self._handles, self._arrays = {}, {}
            self._pid = os.getpid()
        samples = self._arrays.get(shard)
        if samples is None:
            x = self._file(shard)["x"]
            offset = x.id.get_offset()  # None when chunked or not allocated
            samples = x
            if x.chunks is None and offset is not None:
                samples = np.memmap(self.shard_dir / self.shard_names[shard], dtype=x.dtype,
                                    mode="r", offset=offset, shape=x.shape)
            self._arrays[shard] = samples
        return samples

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return read_rows(self._samples(int(self.shard_of[i])), self.row_of[i:i + 1])[0], \
            int(self.labels[i])

    def __getitems__(self, positions: Sequence[int]) -> list[tuple[np.ndarray, int]]:
        """The samples at ``positions``, in that order, with one read per shard touched.

        The samples are the rows of one new batch array, in order, each copied once into
        place (from a memory map, straight from the page cache; from HDF5, one selection
        per shard); :func:`collate` hands that array on instead of stacking a copy.
        """
        pos = np.asarray(positions, dtype=np.int64)
        shard, row = self.shard_of[pos], self.row_of[pos]
        order = np.lexsort((row, shard))  # by shard, then row: the HDF5 read order
        cuts = np.flatnonzero(np.diff(shard[order])) + 1
        out: np.ndarray | None = None
        for group in np.split(order, cuts):
            x = self._samples(int(shard[group[0]]))
            if out is None:
                out = np.empty((len(pos), *x.shape[1:]), dtype=x.dtype)
            if isinstance(x, np.ndarray):
                for i, r in zip(group.tolist(), row[group].tolist(), strict=True):
                    out[i] = x[r]
            else:
                out[group] = read_rows(x, row[group])
        assert out is not None  # at least one position, so at least one group
        return list(zip(out, self.labels[pos].tolist(), strict=True))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"], state["_arrays"] = {}, {}
        return state

    def close(self) -> None:
        self._arrays = {}
        for f in self._handles.values():
            f.close()
        self._handles = {}


def read_rows(x: np.ndarray | h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """A copy of ``x[rows]`` for sorted ``rows`` (repeats allowed), in one read.

    From a memory map, numpy's indexing copies the rows out. From HDF5, a slice when the rows
    are consecutive, otherwise one selection of all of them (h5py needs strictly increasing
    indices, hence the de-duplication).
    """
    if isinstance(x, np.ndarray):
        return np.asarray(x[rows])
    unique, inverse = np.unique(rows, return_inverse=True)
    first, last = int(unique[0]), int(unique[-1])
    block = x[first:last + 1] if last - first + 1 == len(unique) else x[unique]
    return block if len(unique) == len(rows) else block[inverse]


def collate(batch: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack numpy samples into one tensor without per-sample tensor creation; samples that
    are already the rows of one batch array, in order (:meth:`ShardDataset.__getitems__`),
    are that array, not copied again."""
    xs = [b[0] for b in batch]
    x = _rows_of(xs)
    if x is None:
        x = np.stack(xs)
    y = np.fromiter((b[1] for b in batch), dtype=np.int64, count=len(batch))
    return torch.from_numpy(x), torch.from_numpy(y)


def _rows_of(xs: list[np.ndarray]) -> np.ndarray | None:
    """The C-contiguous array whose rows ``xs`` are, exactly and in order, else ``None``."""
    base = xs[0].base
    if not isinstance(base, np.ndarray) or base.shape[0] != len(xs) \
            or not base.flags.c_contiguous or base.shape[1:] != xs[0].shape:
        return None
    start, step = base.__array_interface__["data"][0], base.strides[0]
    for i, x in enumerate(xs):
        if x.base is not base or x.__array_interface__["data"][0] != start + i * step:
            return None
    return base


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 samples mean ``x / 255``; float samples are already in model range."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


class ShardSampler(Sampler[int]):
    """A fresh random order of the whole split every epoch; DDP-aware via rank/num_replicas."""

    def __init__(self, dataset: ShardDataset, shuffle: bool = True, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.n = len(dataset)
        if shuffle and self.n < num_replicas:
            raise ValueError(f"{self.n} samples cannot be shared by {num_replicas} processes")
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_order(self) -> np.ndarray:
        """All positions of this epoch, before splitting between ranks."""
        if not self.shuffle:
            return np.arange(self.n, dtype=np.int64)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def part_sizes(self) -> list[int]:
        """How many samples each rank gets, in rank order."""
        if self.shuffle:
            return [self.n // self.num_replicas] * self.num_replicas
        base, extra = divmod(self.n, self.num_replicas)
        return [base + (r < extra) for r in range(self.num_replicas)]

    def __iter__(self) -> Iterator[int]:
        sizes = self.part_sizes()
        start = sum(sizes[:self.rank])
        return iter(self.epoch_order()[start:start + sizes[self.rank]].tolist())

    def __len__(self) -> int:
        return self.part_sizes()[self.rank]
