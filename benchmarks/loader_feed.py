"""Does one DataLoader worker feed a GPU? Samples per second of the loader, per recipe, on CPU.

Until a GPU machine runs ``python -m benchmarks.training_throughput --write``, this is the
CPU-side check: for every reference recipe, the stored sample shape and dtype and the
recipe's batch size, one epoch of shuffled batches through the train stage's loader
(``ShardDataset`` + ``ShardSampler`` + ``collate``, a ``DataLoader`` with 0 workers, i.e. the
work one worker process does, in this process), page cache warm. The targets: at least 5,000
samples/s for the 2D recipes and 200 volumes/s for MosMed, per worker (more workers add to
it). Beside each rate, the floor: one plain copy of the same bytes, batch by batch, which
any loader must at least do (the loader copies each sample once, from the shard's memory
map into the batch).

    python -m benchmarks --only loader_feed
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import harness
from benchmarks.training_throughput import Case, make_loader, make_shards

TARGET_2D, TARGET_3D = 5_000, 200  # samples/s per worker


@dataclass(frozen=True)
class Recipe:
    dataset: str
    case: Case
    why: str  # where the shape comes from

    @property
    def target(self) -> int:
        return TARGET_3D if len(self.case.shape) == 4 else TARGET_2D


RECIPES = (
    Recipe("lidc", Case("ResNet-50, 2D crops", "resnet50", (1, 64, 64), "float16", 64),
           "`crops.size_2d: 64`, float16 HU in [0, 1]"),
    Recipe("pcam", Case("ResNet-101", "resnet101", (3, 96, 96), "uint8", 64),
           "native 96 x 96"),
    Recipe("isic", Case("7-conv CNN", "cnn7", (3, 500, 500), "uint8", 32),
           "the reference's 500 px (`prepare.size`)"),
    Recipe("breakhis", Case("VGG-16", "vgg16", (3, 224, 224), "uint8", 32),
           "`prepare.image_size: 224`"),
    Recipe("mosmed", Case("3D CNN", "cnn3d", (1, 64, 128, 128), "float16", 2),
           "`prepare.shape: [64, 128, 128]`"),
)
# bytes of stored samples per recipe: enough batches for a stable epoch, a bounded file
EPOCH_BYTES = 256 * 2**20


def epoch_samples(case: Case, budget: int) -> int:
    """Samples in the benchmark's epoch: ``budget`` bytes, whole batches, at least 4."""
    return max(4, budget // (_sample_bytes(case) * case.batch)) * case.batch


def run(repeats: int = 7, budget: int = EPOCH_BYTES, scale: int = 1) -> list[dict]:
    """One record per recipe: median and best samples/s over ``repeats`` interleaved epochs.
    ``scale`` divides the sample sides (a smoke test's tiny shapes)."""
    with tempfile.TemporaryDirectory(prefix="oncopipe-loader-feed-") as tmp:
        loaders, cases = {}, {}
        for recipe in RECIPES:
            shape = recipe.case.shape[:1] + tuple(s // scale for s in recipe.case.shape[1:])
            case = Case(recipe.case.name, recipe.case.model, shape, recipe.case.dtype,
                        recipe.case.batch)
            shards = make_shards(Path(tmp) / recipe.dataset, case,
                                 epoch_samples(case, budget))
            loaders[recipe.dataset] = make_loader(shards, case.batch, 0, False)
            cases[recipe.dataset] = case

        def epoch(dataset: str):
            return lambda: sum(len(y) for _, y in loaders[dataset])

        def floor(dataset: str):
            """One copy of the epoch's bytes, batch by batch, into one batch buffer: what
            any loader must at least do."""
            case = cases[dataset]
            n = len(loaders[dataset].dataset) // case.batch * case.batch
            src = np.ones((n, *case.shape), dtype=case.dtype)
            out = np.empty((case.batch, *case.shape), dtype=case.dtype)
            return lambda: [np.copyto(out, src[i:i + case.batch])
                            for i in range(0, n, case.batch)]

        def build() -> list[dict]:
            methods = {}
            for r in RECIPES:
                methods[r.dataset] = epoch(r.dataset)
                methods[f"floor {r.dataset}"] = floor(r.dataset)
            times = harness.interleaved(methods, repeats)
            records = []
            for recipe in RECIPES:
                case, t = cases[recipe.dataset], times[recipe.dataset]
                n = len(loaders[recipe.dataset].dataset)
                n -= n % case.batch
                rate = n / statistics.median(t)
                records.append({
                    "benchmark": "loader feed, one worker", "dataset": recipe.dataset,
                    "recipe": case.name, "sample": f"{' x '.join(map(str, case.shape))} "
                                                   f"{case.dtype}",
                    "from": recipe.why, "batch": case.batch, "epoch": n, "repeats": len(t),
                    "rate": rate, "best_rate": n / min(t),
                    "mb_s": rate * _sample_bytes(case) / 2**20,
                    "floor": n / statistics.median(times[f"floor {recipe.dataset}"]),
                    "target": recipe.target,
                    "meets": "yes" if rate >= recipe.target else "NO"})
            return records

        return harness.load_stamped(build)


def _sample_bytes(case: Case) -> int:
    size = 1
    for side in case.shape:
        size *= side
    return size * (1 if case.dtype == "uint8" else 2)


COLUMNS = [harness.Column("dataset", "{dataset}", False),
           harness.Column("recipe", "{recipe}", False),
           harness.Column("stored sample", "{sample}", False),
           harness.Column("shape from", "{from}", False),
           harness.Column("batch", "{batch}"),
           harness.Column("epoch (samples)", "{epoch:,}"),
           harness.Column("samples/s (median)", "{rate:,.0f}"),
           harness.Column("samples/s (best)", "{best_rate:,.0f}"),
           harness.Column("MB/s", "{mb_s:,.0f}"),
           harness.Column("copy floor (samples/s)", "{floor:,.0f}"),
           harness.Column("target per worker", "{target:,}"),
           harness.Column("meets it", "{meets}", False)]


def table(records: list[dict]) -> str:
    return harness.grouped_tables(records, lambda _: COLUMNS)
