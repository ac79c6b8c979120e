"""Read speed: batches from HDF5 shards vs one file per sample; HDF5 chunking for random access.

Two questions, both with the page cache warm (each measurement is the best of ``--repeats``
after a warm-up pass, the readers measured in turn within each repeat, so a burst of load
from other jobs hits them alike), so the figures compare formats, not disks:

1. An epoch of training batches: from the shards through :class:`oncopipe.loader.ShardDataset`
   and :class:`~oncopipe.loader.ShardSampler` (what the train stage does: a fresh uniform
   permutation every epoch, each batch's rows read sorted, one HDF5 selection per shard); the
   same shards in sequential runs (shuffled shard order, rows in stored order from a random
   start: the sampler before issue 8, which gave every epoch the same batch neighbours); one
   ``.npy`` file per sample and one PNG file per sample, read in a shuffled order.
2. Random access to single samples of one HDF5 file: contiguous (no chunks), one sample per
   chunk with gzip, and gzip chunks of ``--chunk`` samples (h5py's "auto" style), where
   reading one sample decompresses the whole chunk.

Usage (figures in docs/benchmarks.md)::

    python benchmarks/shard_read.py --samples 2048 --shape 3 96 96 --batch 64
    python benchmarks/shard_read.py --samples 2048 --shape 3 96 96 --batch 64 --shard-size 64
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import polars as pl
from torch.utils.data import DataLoader, Sampler

from oncopipe.arrays import ArrayWriter
from oncopipe.config import ShardParams
from oncopipe.loader import ShardDataset, ShardSampler, collate
from oncopipe.manifest import ManifestMeta, write_manifest
from oncopipe.shards import write_shards


def best_of(repeats: int, fn) -> float:
    return interleaved(repeats, [fn])[0]


def interleaved(repeats: int, fns: list) -> list[float]:
    """Best time of each of ``fns`` over ``repeats`` rounds, each round running all in turn."""
    for fn in fns:
        fn()  # warm-up: page cache, h5py metadata
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times, strict=True):
            t = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - t)
    return [min(t) for t in times]


def make_data(root: Path, n: int, shape: tuple[int, ...], seed: int, shard_size: int
              ) -> np.ndarray:
    """Smooth random images (compressible like real ones), as prepared arrays + shards."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (n, *shape[:-2], shape[-2] // 8, shape[-1] // 8), np.uint8)
    data = base.repeat(8, axis=-2).repeat(8, axis=-1)
    data = (data + rng.integers(0, 4, data.shape, np.uint8)).astype(np.uint8)
    prepared = root / "prepared"
    prepared.mkdir(parents=True)
    with ArrayWriter(prepared / "x.npy", shape, np.uint8) as w:
        for sample in data:
            w.append(sample)
    df = pl.DataFrame({"sample_id": [f"s{i:06d}" for i in range(n)],
                       "patient_id": [f"p{i // 4:06d}" for i in range(n)],
                       "label": (np.arange(n) % 2).tolist(), "array_file": ["x.npy"] * n,
                       "array_index": list(range(n)), "source": ["bench"] * n})
    write_manifest(df, ManifestMeta("bench", "binary", ("a", "b"), "CHW"),
                   prepared / "manifest.parquet")
    write_shards(prepared, root / "shards",
                 ShardParams(ratios=(1.0, 0.0, 0.0), shard_size=shard_size), 0)
    per_file = root / "npy"
    per_file.mkdir()
    png = root / "png"
    png.mkdir()
    for i, sample in enumerate(data):
        np.save(per_file / f"{i:06d}.npy", sample)
        cv2.imwrite(str(png / f"{i:06d}.png"), np.ascontiguousarray(sample.transpose(1, 2, 0)))
    return data


class SequentialRuns(Sampler[int]):
    """The sampler before issue 8, for comparison: shuffled shard order, each shard's rows in
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


def epoch_from_shards(shards: Path, batch: int, sequential: bool = False) -> int:
    ds = ShardDataset(shards, "train")
    sampler = SequentialRuns(ds, 1) if sequential else ShardSampler(ds, seed=1)
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, collate_fn=collate)
    return sum(len(y) for _, y in loader)


def epoch_from_files(files: list[Path], batch: int, read) -> int:
    order = np.random.default_rng(1).permutation(len(files))
    seen = 0
    for start in range(0, len(order), batch):
        x = np.stack([read(files[i]) for i in order[start:start + batch]])
        seen += len(x)
    return seen


def random_access(path: Path, reads: int) -> None:
    with h5py.File(path, "r") as f:
        x = f["x"]
        for i in np.random.default_rng(2).integers(0, x.shape[0], reads):
            x[int(i)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--shape", type=int, nargs="+", default=[3, 96, 96])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--shard-size", type=int, default=1024, help="samples per shard")
    ap.add_argument("--chunk", type=int, default=64, help="samples per chunk, chunked case")
    ap.add_argument("--reads", type=int, default=256, help="random single-sample reads")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    shape = tuple(args.shape)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_data(root, args.samples, shape, 0, args.shard_size)
        n = args.samples
        npy = sorted((root / "npy").iterdir())
        png = sorted((root / "png").iterdir())
        readers = {
            "HDF5 shards, ShardDataset + ShardSampler (random order)":
                lambda: epoch_from_shards(root / "shards", args.batch),
            "HDF5 shards, sequential runs (the sampler before issue 8)":
                lambda: epoch_from_shards(root / "shards", args.batch, sequential=True),
            "one .npy file per sample": lambda: epoch_from_files(npy, args.batch, np.load),
            "one PNG file per sample (cv2)": lambda: epoch_from_files(
                png, args.batch, lambda p: cv2.imread(str(p), cv2.IMREAD_UNCHANGED)),
        }
        rows = list(zip(readers, interleaved(args.repeats, list(readers.values())),
                        strict=True))
        print(f"\nepoch of {n} samples {shape} uint8 in shards of {args.shard_size}, "
              f"batches of {args.batch}")
        print("| reader | seconds | samples/s | vs shards |\n| --- | ---: | ---: | ---: |")
        for name, sec in rows:
            print(f"| {name} | {sec:.3f} | {n / sec:,.0f} | {sec / rows[0][1]:.1f}x |")

        layouts = {"contiguous, uncompressed": {},
                   "one sample per chunk, gzip": {"chunks": (1, *shape), "compression": "gzip"},
                   f"{args.chunk} samples per chunk, gzip": {
                       "chunks": (args.chunk, *shape), "compression": "gzip"}}
        results = []
        for name, kw in layouts.items():
            path = root / f"{len(results)}.h5"
            with h5py.File(path, "w") as f:
                f.create_dataset("x", data=data, **kw)
            sec = best_of(args.repeats, lambda p=path: random_access(p, args.reads))
            results.append((name, sec / args.reads * 1e6, path.stat().st_size / 2**20))
        print(f"\nrandom single-sample reads ({args.reads}) from one HDF5 file")
        print("| layout | µs per sample | file MiB | vs contiguous |\n| --- | ---: | ---: | ---: |")
        for name, us, mib in results:
            print(f"| {name} | {us:,.0f} | {mib:.1f} | {us / results[0][1]:.1f}x |")


if __name__ == "__main__":
    main()
