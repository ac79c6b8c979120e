"""Read speed: training batches from HDF5 shards vs an ``.npy`` memmap and one file per sample;
HDF5 chunking for random access. Page cache warm: these compare formats, not disks.

1. An epoch of training batches (``shard-epoch``): from the shards through
   :class:`oncopipe.learn.loader.ShardDataset` and :class:`~oncopipe.learn.loader.ShardSampler`
   (what the
   train stage does: a fresh uniform permutation every epoch, each batch's rows read sorted)
   vs the same shards in sequential runs (shuffled shard order, rows in stored order from a
   random start: the sampler this replaced, which gave every epoch the same batch
   neighbours), the prepared ``.npy`` opened as a memmap and gathered per shuffled batch, one
   ``.npy`` file per sample, one PNG file per sample. Every reader returns the
   number of samples and the sum of their pixels: the same multiset of samples gives the same
   pair whatever the order.
2. Random access to single samples of one HDF5 file (``shard-random``): contiguous (the shard
   default), one sample per gzip chunk (``compression: gzip``), and gzip chunks of 64 samples
   (h5py's "auto" style), where reading one sample decompresses its whole chunk.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import polars as pl
from torch.utils.data import DataLoader, Sampler

from benchmarks.harness import Comparison, Method, same_array, same_value
from oncopipe.core.config import ShardParams
from oncopipe.core.manifest import ManifestMeta, write_manifest
from oncopipe.ingest.arrays import ArrayWriter
from oncopipe.learn.loader import ShardDataset, ShardSampler, collate
from oncopipe.shard.shards import write_shards

CHUNK = 64


def smooth_images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Smooth random uint8 images (compressible like real ones)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (n, *shape[:-2], shape[-2] // 8, shape[-1] // 8), np.uint8)
    data = base.repeat(8, axis=-2).repeat(8, axis=-1)
    return (data + rng.integers(0, 4, data.shape, np.uint8)).astype(np.uint8)


def write_prepared_and_shards(root: Path, data: np.ndarray) -> Path:
    """``data`` as a prepared folder (one ``.npy`` + manifest, two classes, four samples per
    patient) and the shards the shard stage makes of it (all in the training split)."""
    n = len(data)
    prepared = root / "prepared"
    prepared.mkdir(parents=True)
    with ArrayWriter(prepared / "x.npy", data.shape[1:], data.dtype) as w:
        for sample in data:
            w.append(sample)
    df = pl.DataFrame({"sample_id": [f"s{i:06d}" for i in range(n)],
                       "patient_id": [f"p{i // 4:06d}" for i in range(n)],
                       "label": (np.arange(n) % 2).tolist(), "array_file": ["x.npy"] * n,
                       "array_index": list(range(n)), "source": ["bench"] * n})
    layout = "CHW" if data.ndim == 4 else "CDHW"
    write_manifest(df, ManifestMeta("bench", "binary", ("a", "b"), layout),
                   prepared / "manifest.parquet")
    write_shards(prepared, root / "shards", ShardParams(ratios=(1.0, 0.0, 0.0)), 0)
    return root / "shards"


def make_data(root: Path, n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Prepared arrays + shards + one ``.npy`` and one PNG per sample, of the same images."""
    data = smooth_images(n, shape, seed)
    write_prepared_and_shards(root, data)
    for fmt in ("npy", "png"):
        (root / fmt).mkdir()
    for i, sample in enumerate(data):
        np.save(root / "npy" / f"{i:06d}.npy", sample)
        cv2.imwrite(str(root / "png" / f"{i:06d}.png"),
                    np.ascontiguousarray(sample.transpose(1, 2, 0)))
    return data


class SequentialRuns(Sampler[int]):
    """The previous sampler, for comparison: shuffled shard order, each shard's rows in
    stored order from a random start (every epoch the same neighbours share a batch)."""

    def __init__(self, ds: ShardDataset, seed: int):
        bounds = (np.flatnonzero(np.diff(ds.shard_of)) + 1).tolist()
        self.ranges = list(zip([0, *bounds], [*bounds, len(ds)], strict=True))
        self.seed = seed

    def __iter__(self):
        rng = np.random.default_rng([self.seed, 0])
        parts = []
        for s in rng.permutation(len(self.ranges)):
            rows = np.arange(*self.ranges[s])
            parts.append(np.roll(rows, -int(rng.integers(len(rows)))))
        return iter(np.concatenate(parts).tolist())

    def __len__(self) -> int:
        return self.ranges[-1][1]


def epoch_from_shards(shards: Path, batch: int, sequential: bool = False) -> tuple[int, int]:
    ds = ShardDataset(shards, "train")
    sampler = SequentialRuns(ds, 1) if sequential else ShardSampler(ds, seed=1)
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, collate_fn=collate)
    seen = total = 0
    for x, _ in loader:
        seen, total = seen + len(x), total + int(x.numpy().sum(dtype=np.int64))
    ds.close()
    return seen, total


def _batches(n: int, batch: int) -> list[np.ndarray]:
    order = np.random.default_rng(1).permutation(n)
    return [order[s:s + batch] for s in range(0, n, batch)]


def epoch_from_memmap(path: Path, batch: int) -> tuple[int, int]:
    x = np.load(path, mmap_mode="r")
    seen = total = 0
    for idx in _batches(len(x), batch):
        block = x[np.sort(idx)]  # sorted gather: the kindest order for a memmap
        seen, total = seen + len(block), total + int(block.sum(dtype=np.int64))
    return seen, total


def epoch_from_files(files: list[Path], batch: int, read) -> tuple[int, int]:
    seen = total = 0
    for idx in _batches(len(files), batch):
        block = np.stack([read(files[i]) for i in idx])
        seen, total = seen + len(block), total + int(block.sum(dtype=np.int64))
    return seen, total


def read_png(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED).transpose(2, 0, 1)


def random_access(path: Path, rows: np.ndarray) -> np.ndarray:
    with h5py.File(path, "r") as f:
        x = f["x"]
        return np.stack([x[int(i)] for i in rows])


def comparisons(work: Path, quick: bool) -> list[Comparison]:
    n, shape, batch, reads = (96, (3, 32, 32), 16, 32) if quick else (2048, (3, 96, 96), 64, 256)
    data = make_data(work, n, shape, 0)
    npy = sorted((work / "npy").iterdir())
    png = sorted((work / "png").iterdir())
    epoch = Comparison(
        "shard-epoch", f"One epoch of {n} samples {shape} uint8 in shuffled batches of {batch}",
        "sample", n, [
            Method("HDF5 shards, `ShardDataset` + `ShardSampler`, random order (the train stage)",
                   lambda: epoch_from_shards(work / "shards", batch)),
            Method("HDF5 shards, sequential runs (the previous sampler)",
                   lambda: epoch_from_shards(work / "shards", batch, sequential=True),
                   same_value),
            Method("prepared `.npy` as a memmap, sorted gather per batch",
                   lambda: epoch_from_memmap(work / "prepared" / "x.npy", batch), same_value),
            Method("one `.npy` file per sample",
                   lambda: epoch_from_files(npy, batch, np.load), same_value),
            Method("one PNG file per sample (OpenCV decode)",
                   lambda: epoch_from_files(png, batch, read_png), same_value),
        ])
    layouts = {"contiguous, uncompressed (shard default, `compression: none`)": {},
               "one sample per chunk, gzip (`compression: gzip`)": {
                   "chunks": (1, *shape), "compression": "gzip"},
               f"{CHUNK} samples per chunk, gzip": {
                   "chunks": (min(CHUNK, n), *shape), "compression": "gzip"}}
    rows = np.random.default_rng(2).integers(0, n, reads)
    methods, sizes = [], []
    for k, (name, kw) in enumerate(layouts.items()):
        path = work / f"layout{k}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("x", data=data, **kw)
        sizes.append(f"{name}: {path.stat().st_size / 2**20:.1f} MiB")
        methods.append(Method(name, lambda p=path: random_access(p, rows),
                              same_array() if k else None))
    random = Comparison("shard-random", f"Random single-sample reads ({reads}) from one HDF5 "
                        f"file of the same data", "sample", reads, methods,
                        note="File sizes: " + "; ".join(sizes) + ".")
    return [epoch, random]
