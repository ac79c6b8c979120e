"""Shard writing and quarter-turn augmentation: the batched paths against the ones they replaced.

- **Shard write**: one HDF5 shard of ``--samples`` samples (``--shape``, uint8) written from a
  memory-mapped ``.npy`` in a shuffled order, with :func:`oncopipe.shard.shards._write_shard` (one
  gather and one write per 256 MB) and with the same writer at one sample a block (one read
  and one HDF5 write per sample, as the writer it replaced did; tests/test_shards.py uses the
  same reference); the two files must be byte-identical.
- **rotate90**: :func:`oncopipe.train.augment.augment_batch` with flips + ``rotate90`` (exact
  ``torch.rot90``) against the ``affine_grid`` + ``grid_sample`` path it replaced
  (tests/test_augment.py ``_affine_reference``), on a 2D batch and a 3D batch, one thread;
  the largest difference is reported.

Interleaved (A, B, A, B, ...), one warm-up round, median and best of ``--repeats``. Usage
(figures in docs/benchmarks.md)::

    python benchmarks/shard_write.py [--repeats 5] [--samples 1024] [--shape 3 64 64]

``run(repeats)`` returns the rows (list of dicts) for ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the replaced implementations, kept as references
sys.path.insert(0, str(ROOT))  # run as a script: the harness

from test_augment import _affine_reference  # noqa: E402

from benchmarks import harness  # noqa: E402
from oncopipe.core.config import AugmentParams  # noqa: E402
from oncopipe.core.manifest import ManifestMeta  # noqa: E402
from oncopipe.shard import shards  # noqa: E402
from oncopipe.train.augment import augment_batch  # noqa: E402


def _per_sample_writer(path: Path, *args) -> None:
    """The shard writer at one sample a block: one read and one HDF5 write per sample."""
    block_bytes = shards._BLOCK_BYTES
    shards._BLOCK_BYTES = 1
    try:
        shards._write_shard(path, *args)
    finally:
        shards._BLOCK_BYTES = block_bytes


def shard_rows(repeats: int, n: int, shape: tuple[int, ...]) -> list[dict]:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="oncopipe-bench-shard-") as tmp:
        d = Path(tmp)
        np.save(d / "x.npy", rng.integers(0, 256, (n, *shape), dtype=np.uint8))
        order = rng.permutation(n)
        part = pl.DataFrame({"array_file": ["x.npy"] * n, "array_index": order,
                             "label": order % 2, "patient_id": [f"p{i // 3}" for i in order],
                             "sample_id": [f"s{i}" for i in order]})
        meta = ManifestMeta(dataset="bench", task="t", class_names=("a", "b"), layout="CHW",
                            normalisation={}, params_hash="h")
        args = (part, d, meta, shape, np.dtype(np.uint8), "none", "train")
        ours = "oncopipe (one gather, one write)"
        times = harness.interleaved({
            "per-sample writes (before)": lambda: _per_sample_writer(d / "a.h5", *args),
            ours: lambda: shards._write_shard(d / "b.h5", *args),
        }, repeats)
        same = (d / "a.h5").read_bytes() == (d / "b.h5").read_bytes()
    return harness.timing_records("shard write", f"{n} x {'x'.join(map(str, shape))} uint8",
                                  times, ours,
                                  {ours: "identical bytes" if same else "DIFFERENT"}, digits=5)


def rotate_rows(repeats: int) -> list[dict]:
    p = AugmentParams(hflip=True, vflip=True, rotate90=True)
    ours = "oncopipe (flips + torch.rot90)"
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for shape in [(64, 3, 64, 64), (8, 1, 64, 128, 128)]:
            x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
            new = augment_batch(x, p, torch.Generator().manual_seed(1))
            old = _affine_reference(x, p, torch.Generator().manual_seed(1))
            diff = float((new - old).abs().max())
            times = harness.interleaved({
                "affine_grid + grid_sample (before)":
                    lambda x=x: _affine_reference(x, p, torch.Generator().manual_seed(1)),
                ours: lambda x=x: augment_batch(x, p, torch.Generator().manual_seed(1)),
            }, repeats)
            rows += harness.timing_records("rotate90 augmentation, 1 thread",
                                           "x".join(map(str, shape)), times, ours,
                                           {ours: f"max |difference| {diff:.1e}"}, digits=5)
    finally:
        torch.set_num_threads(threads)
    return rows


def run(repeats: int = 5, samples: int = 1024, shape: tuple[int, ...] = (3, 64, 64)
        ) -> list[dict]:
    """All rows: the shard write, then rotate90 on a 2D and a 3D batch (see the docstring)."""
    return harness.load_stamped(
        lambda: shard_rows(repeats, samples, shape) + rotate_rows(repeats))


COLUMNS = [harness.Column("size", "{size}", False), *harness.timing_columns(4)]


def table(rows: list[dict]) -> str:
    """The rows as Markdown tables, one per benchmark (rotate90: one row per batch shape)."""
    return harness.grouped_tables(rows, lambda _: COLUMNS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5,
                    help="interleaved rounds after a warm-up, median reported (default 5)")
    ap.add_argument("--samples", type=int, default=1024,
                    help="samples in the shard (default 1024)")
    ap.add_argument("--shape", type=int, nargs="+", default=[3, 64, 64],
                    help="one sample's shape, uint8 (default 3 64 64)")
    args = ap.parse_args()
    print(table(run(args.repeats, args.samples, tuple(args.shape))))


if __name__ == "__main__":
    main()
