"""ShardDataset and ShardSampler: correct samples, batched reads, a fresh order every epoch."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from synthetic_data import make_shards
from torch.utils.data import DataLoader

from oncopipe.core.config import ShardParams
from oncopipe.learn.loader import ShardDataset, ShardSampler, collate, to_float


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
    # unsorted, across shards, a consecutive run, a gap inside a shard, a repeat
    positions = [13, 3, 4, 5, 6, 12, 0, 25, 9, 4, len(ds) - 1]
    batch = ds.__getitems__(positions)
    assert len(batch) == len(positions)
    for p, (x, y) in zip(positions, batch, strict=True):
        x1, y1 = ds[p]
        np.testing.assert_array_equal(x, x1)
        assert y == y1


@pytest.mark.parametrize("compression", ["none", "lzf"])
def test_a_batch_is_read_once_into_place_and_collated_without_a_copy(tmp_path, compression):
    root = make_shards(tmp_path, ShardParams(shard_size=10, compression=compression),
                       patients_per_class=(6, 4), samples_per_patient=2)
    ds = ShardDataset(root, "train")
    positions = [5, 1, 11, 2, 2, 0, len(ds) - 1]  # across shards, unsorted, a repeat
    batch = ds.__getitems__(positions)
    x, y = collate(batch)
    np.testing.assert_array_equal(x.numpy(), np.stack([ds[p][0] for p in positions]))
    assert y.tolist() == [ds[p][1] for p in positions]
    assert np.shares_memory(x.numpy(), batch[0][0])  # the batch array itself, not a copy
    reordered = collate(batch[::-1])[0]  # rows out of order: stacked, still right
    np.testing.assert_array_equal(reordered.numpy(), x.numpy()[::-1])
    assert not np.shares_memory(reordered.numpy(), batch[0][0])
    ds.close()


@pytest.mark.parametrize("compression", ["none", "lzf"])
def test_contiguous_and_compressed_shards_read_alike(tmp_path, compression):
    root = make_shards(tmp_path, ShardParams(shard_size=10, compression=compression),
                       patients_per_class=(6, 4), samples_per_patient=2)
    ds = ShardDataset(root, "train")
    src = np.load(root.parent / "prepared" / "images.npy")
    positions = [5, 1, 11, 2, 2, 0, len(ds) - 1]
    for p, (x, _) in zip(positions, ds.__getitems__(positions), strict=True):
        pid, s = ds.sample_ids[p].split("-s")
        np.testing.assert_array_equal(x, src[int(pid[1:]) * 2 + int(s)])
    memory_mapped = isinstance(ds._samples(0), np.ndarray)
    assert memory_mapped == (compression == "none")
    ds.close()


def _adjacent_pairs(order) -> set[frozenset]:
    return {frozenset(pair) for pair in itertools.pairwise(order)}


def test_every_epoch_is_a_fresh_random_order(shards):
    ds = ShardDataset(shards, "train")
    sampler = ShardSampler(ds, shuffle=True, seed=5)
    epochs = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(len(ds)))  # a permutation of the split
        epochs.append(order)
    assert len({tuple(o) for o in epochs}) == 4
    # neighbours do not stay neighbours (the old sampler kept all but one per shard)
    for a, b in itertools.pairwise(epochs):
        assert len(_adjacent_pairs(a) & _adjacent_pairs(b)) < len(ds) // 4
    # batches mix shards, and rows inside a shard come in no fixed order
    first_batch = epochs[0][:8]
    assert len({int(ds.shard_of[i]) for i in first_batch}) > 1
    assert (np.diff(epochs[0]) == 1).sum() < len(ds) // 4
    sampler.set_epoch(0)
    assert list(sampler) == epochs[0]  # deterministic for (seed, epoch)
    assert list(ShardSampler(ds, shuffle=True, seed=5)) == epochs[0]
    assert list(ShardSampler(ds, shuffle=True, seed=6)) != epochs[0]


def test_distributed_ranks_get_disjoint_equal_parts_of_each_epoch(shards):
    ds = ShardDataset(shards, "train")
    for epoch in (0, 1):
        samplers = [ShardSampler(ds, seed=2, num_replicas=3, rank=r) for r in range(3)]
        for s in samplers:
            s.set_epoch(epoch)
        parts = [list(s) for s in samplers]
        assert {len(p) for p in parts} == {len(ds) // 3}
        assert len(set().union(*parts)) == 3 * (len(ds) // 3)  # disjoint
        whole = samplers[0].epoch_order().tolist()
        assert [i for p in parts for i in p] == whole[:3 * (len(ds) // 3)]
    with pytest.raises(ValueError, match="rank"):
        ShardSampler(ds, num_replicas=2, rank=2)


def test_unshuffled_parts_cover_the_split_exactly_once(shards):
    ds = ShardDataset(shards, "val")
    parts = [list(ShardSampler(ds, shuffle=False, num_replicas=4, rank=r)) for r in range(4)]
    assert [i for p in parts for i in p] == list(range(len(ds)))  # in order, no padding
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


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
