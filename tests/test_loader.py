"""ShardDataset and ShardSampler: correct samples, batched reads, shard-sequential order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic_data import make_shards
from torch.utils.data import DataLoader

from oncopipe.config import ShardParams
from oncopipe.loader import ShardDataset, ShardSampler, collate, to_float


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("loader"), ShardParams(shard_size=10),
                       patients_per_class=(14, 10), samples_per_patient=2)


def test_items_match_the_prepared_arrays(shards):
    ds = ShardDataset(shards, "train")
    src = np.load(shards.parent / "prepared" / "images.npy")
    for i in (0, 7, len(ds) - 1):
        x, y = ds[i]
        pid, s = ds.sample_ids[i].split("-s")
        np.testing.assert_array_equal(x, src[int(pid[1:]) * 2 + int(s)])
        assert y == ds.labels[i]


def test_batched_read_equals_single_reads(shards):
    ds = ShardDataset(shards, "train")
    positions = [3, 4, 5, 6, 12, 13, 0]  # runs inside a shard, a jump, another shard
    batch = ds.__getitems__(positions)
    for p, (x, y) in zip(positions, batch, strict=True):
        x1, y1 = ds[p]
        np.testing.assert_array_equal(x, x1)
        assert y == y1


def test_sampler_is_a_permutation_sequential_within_shards(shards):
    ds = ShardDataset(shards, "train")
    sampler = ShardSampler(ds, shuffle=True, seed=5)
    order = list(sampler)
    assert sorted(order) == list(range(len(ds)))
    steps = np.diff(order)
    # inside a shard the next row follows (except one wrap per shard); jumps only between shards
    assert (steps == 1).sum() >= len(ds) - 2 * len(ds.shard_names)
    sampler.set_epoch(1)
    assert list(sampler) != order
    sampler.set_epoch(0)
    assert list(sampler) == order


def test_distributed_ranks_split_the_epoch_evenly(shards):
    ds = ShardDataset(shards, "train")
    parts = [list(ShardSampler(ds, seed=2, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(p) for p in parts}) == 1
    assert set().union(*parts) == set(range(len(ds)))


def test_dataloader_batches_and_uint8_scaling(shards):
    ds = ShardDataset(shards, "val")
    loader = DataLoader(ds, batch_size=4, sampler=ShardSampler(ds, shuffle=False),
                        collate_fn=collate)
    x, y = next(iter(loader))
    assert x.dtype == torch.uint8 and x.shape == (4, 1, 16, 16) and y.dtype == torch.int64
    xf = to_float(x)
    assert xf.dtype == torch.float32 and float(xf.max()) <= 1.0
    assert float(xf.max()) == pytest.approx(float(x.max()) / 255.0)


def test_worker_processes_read_the_same_samples(shards):
    ds = ShardDataset(shards, "val")
    ds[0]  # a handle open in the parent must not be reused by the workers
    sampler = ShardSampler(ds, shuffle=False)
    single = [b for b in DataLoader(ds, batch_size=5, sampler=sampler, collate_fn=collate)]
    multi = [b for b in DataLoader(ds, batch_size=5, sampler=sampler, collate_fn=collate,
                                   num_workers=2)]
    for (x0, y0), (x1, y1) in zip(single, multi, strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
