"""Manifest + arrays -> patient-level, label-stratified, balanced HDF5 shards.

Why each step is here:

- **Split by patient, stratified by label.** Samples of one patient are correlated; if they
  land in both training and test the test score measures memory, not generalisation. Each
  patient gets one label (its most frequent sample label, ties to the lower index) and the
  patients of each label are dealt to train/val/test in the configured ratios, seeded.
- **Duplicates follow each other.** Identical sample content under two patient ids (re-uploads,
  the ISIC duplicate list) would leak the same way, so patients that share a content hash are
  split as one group. :func:`check_leakage` then verifies both rules on the final index and
  fails the stage if either is broken.
- **Balance only the training split.** ``undersample`` / ``oversample`` make every class as
  frequent as the rarest / commonest one; ``none`` keeps the data and records inverse-frequency
  class weights for the loss. Validation and test keep the true class mix.
- **HDF5 layout for fast reads.** Chunked, compressed HDF5 with many samples per chunk makes
  random access decompress a whole chunk per sample; here each sample is its own chunk
  (compressed or not) or the dataset is contiguous, so one sample costs one read, in any
  order: training reads a fresh random permutation every epoch (see :mod:`oncopipe.learn.loader`).
  Measured in docs/benchmarks.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import polars as pl
import pyarrow.parquet as pq
from tqdm import tqdm

from oncopipe.core.atomic import atomic_path, write_text
from oncopipe.core.cards import SUMMARY_FILE, RawSource, ShardSummary, SplitSummary
from oncopipe.core.config import ShardParams
from oncopipe.core.errors import InputError
from oncopipe.core.manifest import ManifestError, ManifestMeta, check_arrays, read_manifest

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
INDEX_FILE = "index.parquet"


class LeakageError(InputError):
    """A patient or an identical sample appears in more than one split."""


@dataclass(frozen=True)
class ShardPlan:
    """Which manifest rows go to which split, in which order (``copy`` > 0: oversampled)."""

    rows: pl.DataFrame  # manifest columns + content_hash, split, copy; in write order
    duplicate_links: int  # patients merged into another patient's group by a shared hash
    class_weights: list[float] | None


# --------------------------------------------------------------------------------------------
# Content hashes and grouping
# --------------------------------------------------------------------------------------------


def content_hashes(df: pl.DataFrame, base_dir: Path) -> list[str]:
    """BLAKE2b of each sample's array bytes (shape and dtype included), in ``df`` order."""
    out = [""] * len(df)
    files = df["array_file"].to_list()
    idx = df["array_index"].to_list()
    order = sorted(range(len(df)), key=lambda r: (files[r], idx[r]))
    arrays: dict[str, np.ndarray] = {}
    for r in tqdm(order, desc="hashing samples", unit="sample", mininterval=2.0, disable=None):
        arr = arrays.get(files[r])
        if arr is None:
            arrays.clear()  # one memory map open at a time
            arr = arrays[files[r]] = np.load(base_dir / files[r], mmap_mode="r")
        sample = np.ascontiguousarray(arr[idx[r]])
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{sample.dtype.str}{sample.shape}".encode())
        h.update(sample.tobytes())
        out[r] = h.hexdigest()
    return out


def _split_groups(df: pl.DataFrame) -> tuple[dict[str, str], int]:
    """Union patients that share a content hash; returns patient -> group id and link count."""
    parent: dict[str, str] = {p: p for p in df["patient_id"].unique().to_list()}

    def find(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    links = 0
    dup = df.filter(pl.col("content_hash").is_duplicated())
    for _, grp in dup.group_by("content_hash", maintain_order=True):
        patients = sorted(set(grp["patient_id"].to_list()))
        for other in patients[1:]:
            a, b = find(patients[0]), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
                links += 1
    return {p: find(p) for p in parent}, links


# --------------------------------------------------------------------------------------------
# Splitting and balancing
# --------------------------------------------------------------------------------------------


def _allocate(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Split ``n`` items by ``ratios`` (largest remainder); train gets one if n > 0."""
    raw = [n * r for r in ratios]
    counts = [int(np.floor(x)) for x in raw]
    rest = sorted(range(3), key=lambda i: (counts[i] - raw[i], i))
    for i in rest[: n - sum(counts)]:
        counts[i] += 1
    if n and counts[0] == 0:
        donor = max(range(1, 3), key=lambda i: counts[i])
        counts[donor] -= 1
        counts[0] += 1
    return counts


def assign_splits(df: pl.DataFrame, ratios: tuple[float, float, float], seed: int) -> pl.DataFrame:
    """Add ``split``: groups (column ``group``) dealt to splits per label stratum, seeded.

    A group's label is its most frequent sample label (ties: lowest label index).
    """
    counts = df.group_by(["group", "label"]).len().sort(["group", "len", "label"],
                                                          descending=[False, True, False])
    group_label = counts.unique("group", keep="first", maintain_order=True).sort("group")
    rng = np.random.default_rng(seed)
    assigned: dict[str, str] = {}
    for label in sorted(group_label["label"].unique().to_list()):
        groups = group_label.filter(pl.col("label") == label)["group"].to_list()
        groups = [groups[i] for i in rng.permutation(len(groups))]
        n_train, n_val, _ = _allocate(len(groups), ratios)
        for i, g in enumerate(groups):
            assigned[g] = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    return df.with_columns(pl.col("group").replace_strict(assigned).alias("split"))


def balance_train(train: pl.DataFrame, how: str, n_classes: int, seed: int) -> pl.DataFrame:
    """Undersample or oversample the training rows to equal class counts (adds ``copy``)."""
    train = train.with_columns(pl.lit(0, pl.Int64).alias("copy"))
    if how == "none":
        return train
    rng = np.random.default_rng(seed + 1)
    sizes = train.group_by("label").len()
    counts = sizes["len"].to_numpy()
    target = int(counts.min() if how == "undersample" else counts.max())
    parts = []
    for label in sorted(sizes["label"].to_list()):
        rows = train.filter(pl.col("label") == label).sort("sample_id")
        n = len(rows)
        if how == "undersample":
            parts.append(rows[np.sort(rng.choice(n, target, replace=False)).tolist()])
        else:
            extra: np.ndarray | list[int] = (
                rng.choice(n, target - n, replace=target - n > n) if target > n else [])
            more = rows[np.sort(np.asarray(extra, dtype=np.int64)).tolist()]
            # k-th repeat of the same sample gets copy = k
            more = more.with_columns(
                (pl.int_range(1, pl.len() + 1).over("sample_id")).cast(pl.Int64).alias("copy")
            )
            parts.append(pl.concat([rows, more]))
    out = pl.concat(parts)
    missing = n_classes - len(sizes)
    if missing:
        log.warning("training split lacks %d of %d classes; balancing the present ones",
                    missing, n_classes)
    return out


def plan(
    df: pl.DataFrame, meta: ManifestMeta, hashes: list[str], params: ShardParams, seed: int
) -> ShardPlan:
    """Decide split, balancing and write order for every manifest row."""
    df = df.with_columns(pl.Series("content_hash", hashes))
    groups, links = _split_groups(df)
    df = df.with_columns(pl.col("patient_id").replace_strict(groups).alias("group"))
    df = assign_splits(df, params.ratios, seed)
    n_classes = len(meta.class_names)
    train = balance_train(df.filter(pl.col("split") == "train"), params.balance, n_classes, seed)
    rng = np.random.default_rng(seed + 2)
    train = train.sort(["sample_id", "copy"])
    train = train[rng.permutation(len(train)).tolist()]  # mixed classes within every shard
    others = [
        df.filter(pl.col("split") == s).with_columns(pl.lit(0, pl.Int64).alias("copy"))
        .sort(["patient_id", "sample_id"])
        for s in SPLITS[1:]
    ]
    rows = pl.concat([train, *others], how="vertical_relaxed").drop("group")
    weights = None
    if params.balance == "none" and params.class_weights:
        counts = np.bincount(train["label"].to_numpy(), minlength=n_classes).astype(np.float64)
        present = counts > 0
        w = np.zeros(n_classes)
        w[present] = counts.sum() / (present.sum() * counts[present])
        weights = [round(float(v), 6) for v in w]
    return ShardPlan(rows=rows, duplicate_links=links, class_weights=weights)


def check_leakage(index: pl.DataFrame) -> None:
    """Fail if a patient id or a sample content hash occurs in more than one split."""
    for column, what in (("patient_id", "patient"), ("content_hash", "sample content")):
        per = index.group_by(column).agg(pl.col("split").n_unique().alias("n"),
                                         pl.col("split").unique().sort().alias("splits"))
        bad = per.filter(pl.col("n") > 1).sort(column)
        if len(bad):
            first = bad.row(0, named=True)
            raise LeakageError(
                f"leakage: {len(bad)} {what} value(s) in more than one split, e.g. "
                f"{first[column]!r} in {first['splits']}"
            )


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _write_shard(path: Path, part: pl.DataFrame, base_dir: Path, meta: ManifestMeta,
                 shape: tuple[int, ...], dtype: np.dtype, compression: str, split: str) -> None:
    n = len(part)
    comp = None if compression == "none" else compression
    with h5py.File(path, "w", libver=("earliest", "v110"), track_order=False) as f:
        x = f.create_dataset("x", shape=(n, *shape), dtype=dtype, track_times=False,
                             chunks=(1, *shape) if comp else None, compression=comp)
        f.create_dataset("y", data=part["label"].to_numpy().astype(np.int64), track_times=False)
        sdt = h5py.string_dtype("utf-8")
        f.create_dataset("patient_id", data=np.array(part["patient_id"].to_list(), dtype=object),
                         dtype=sdt, track_times=False)
        f.create_dataset("sample_id", data=np.array(part["sample_id"].to_list(), dtype=object),
                         dtype=sdt, track_times=False)
        f.attrs["dataset"] = meta.dataset
        f.attrs["task"] = meta.task
        f.attrs["split"] = split
        f.attrs["class_names"] = json.dumps(list(meta.class_names))
        f.attrs["layout"] = meta.layout
        f.attrs["normalisation"] = json.dumps(meta.normalisation, sort_keys=True)
        f.attrs["params_hash"] = meta.params_hash
        for start, block in _gather(part, base_dir, shape, dtype):
            x[start:start + len(block)] = block


_BLOCK_BYTES = 256 * 2**20


def _gather(part: pl.DataFrame, base_dir: Path, shape: tuple[int, ...], dtype: np.dtype):
    """Yield (first row, samples) blocks of ``part`` read from its memory-mapped arrays.

    One fancy-indexed read per array file and block, one HDF5 write per block: a shard of up
    to 256 MB is one gather and one write (4x faster than a write per sample, same bytes:
    docs/benchmarks.md); a larger shard (ISIC at 500 px) is written in 256 MB blocks so
    memory stays bounded.
    """
    files = np.array(part["array_file"].to_list(), dtype=object)
    rows = part["array_index"].to_numpy()
    per_block = max(1, _BLOCK_BYTES // max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize))
    arrays: dict[str, np.ndarray] = {}  # memory maps: pages, not copies
    for start in range(0, len(part), per_block):
        stop = min(start + per_block, len(part))
        block = np.empty((stop - start, *shape), dtype)
        for file in sorted(set(files[start:stop])):
            if file not in arrays:
                arrays[file] = np.load(base_dir / file, mmap_mode="r")
            where = np.flatnonzero(files[start:stop] == file)
            block[where] = arrays[file][rows[start + where]]
        yield start, block


def _sample_spec(df: pl.DataFrame, base_dir: Path) -> tuple[tuple[int, ...], np.dtype]:
    specs = {}
    for file in sorted(set(df["array_file"].to_list())):
        arr = np.load(base_dir / file, mmap_mode="r")
        specs[file] = (tuple(arr.shape[1:]), arr.dtype)
    distinct = sorted(set(specs.values()), key=str)
    if len(distinct) != 1:
        raise ManifestError(f"{base_dir}: array files disagree on sample shape/dtype: {specs}")
    return distinct[0]


def write_shards(prepared: Path, out_dir: Path, params: ShardParams, seed: int,
                 params_hash: str = "", raw: dict[str, Any] | None = None) -> ShardSummary:
    """Read ``prepared/manifest.parquet`` and its arrays; write shards, index and summary.

    ``out_dir`` is replaced atomically. Returns the summary (also written as summary.json).
    ``raw`` (:func:`oncopipe.core.provenance.raw_source`) is recorded in the summary as is.
    """
    manifest = prepared / "manifest.parquet"
    df, meta = read_manifest(manifest)
    check_arrays(df, meta, prepared)
    if len(df) == 0:
        raise ManifestError(f"{manifest}: manifest has no samples")
    shape, dtype = _sample_spec(df, prepared)
    log.info("read %s: %d samples, %d patients, sample %s %s", manifest, len(df),
             df["patient_id"].n_unique(), shape, dtype)
    hashes = content_hashes(df, prepared)
    p = plan(df, meta, hashes, params, seed)
    if p.duplicate_links:
        log.warning("%d patient(s) share identical samples with another patient; each such "
                    "group is kept in one split", p.duplicate_links)
    if params_hash:  # this stage's params, chained to the provenance of its input
        chained = hashlib.sha256(f"{meta.params_hash}:{params_hash}".encode()).hexdigest()
        meta = dataclasses.replace(meta, params_hash=chained[:16])
    index_parts = []
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        for split in SPLITS:
            rows = p.rows.filter(pl.col("split") == split)
            for k, start in enumerate(range(0, len(rows), params.shard_size)):
                part = rows[start:start + params.shard_size]
                name = f"{split}-{k:05d}.h5"
                _write_shard(tmp / name, part, prepared, meta, shape, dtype,
                             params.compression, split)
                index_parts.append(part.with_columns(pl.lit(name).alias("shard"),
                                                     pl.int_range(0, len(part)).alias("row")))
                log.info("wrote %s (%d samples)", name, len(part))
        index = pl.concat(index_parts).select(
            "shard", pl.col("row").cast(pl.Int64), "sample_id", "patient_id", "label", "split",
            "copy", "content_hash")
        check_leakage(index)
        with atomic_path(tmp / INDEX_FILE) as t:
            pq.write_table(index.to_arrow(), t, compression="zstd")
        summary = _summary(index, meta, params, shape, dtype, p, len(df))
        if raw is not None:
            summary = summary.model_copy(update={"raw": RawSource(**raw)})
        write_text(tmp / SUMMARY_FILE, summary.to_json())
    log.info("wrote %d shard(s), %s and %s to %s", len(summary.shards), INDEX_FILE,
             SUMMARY_FILE, out_dir)
    return summary


def _summary(index: pl.DataFrame, meta: ManifestMeta, params: ShardParams,
             shape: tuple[int, ...], dtype: np.dtype,
             p: ShardPlan, n_manifest: int) -> ShardSummary:
    names = list(meta.class_names)
    splits = {}
    for split in SPLITS:
        rows = index.filter(pl.col("split") == split)
        counts = np.bincount(rows["label"].to_numpy(), minlength=len(names))
        splits[split] = SplitSummary(
            samples=len(rows),
            unique_samples=rows["sample_id"].n_unique(),
            patients=rows["patient_id"].n_unique(),
            class_counts={n: int(c) for n, c in zip(names, counts, strict=True)},
        )
    return ShardSummary(
        dataset=meta.dataset,
        task=meta.task,
        class_names=names,
        layout=meta.layout,
        sample_shape=shape,
        dtype=np.dtype(dtype).str,
        normalisation=meta.normalisation,
        patient_level=meta.patient_level,
        params_hash=meta.params_hash,
        manifest_samples=n_manifest,
        balance=params.balance,
        class_weights=p.class_weights,
        duplicate_links=p.duplicate_links,
        compression=params.compression,
        shards=sorted(index["shard"].unique().to_list()),
        splits=splits,
    )


def read_index(shard_dir: Path, split: str | None = None) -> pl.DataFrame:
    path = Path(shard_dir) / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: shard index not found (did the shard stage run?)")
    index = pl.read_parquet(path)
    return index if split is None else index.filter(pl.col("split") == split)
