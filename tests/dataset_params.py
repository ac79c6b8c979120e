"""Shared set-up of the image-dataset tests: a config through the stages' loader, file digests,
a small LIDC demo with its lesion tables."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import yaml

from oncopipe import datasets
from oncopipe.core import config
from oncopipe.datasets.lidc import lesions
from oncopipe.datasets.lidc.demo import write as write_lidc_demo
from oncopipe.datasets.lidc.params import DemoParams, PrepareParams

# 8 patients of 20 slices at 64 x 64: every lesion kind, small enough for module fixtures
LIDC_SMALL = DemoParams(seed=5, n_patients=8, rows=64, pixel_spacing=3.0, n_slices=20,
                        nodules=(2, 3), small_nodules=(1, 2), non_nodules=(1, 2))


def load_cfg(tmp: Path, name: str, section: dict) -> config.DatasetConfig:
    """``section`` as ``params.yaml``'s ``<name>`` section, validated by :func:`config.load`."""
    path = tmp / f"params-{len(list(tmp.glob('params-*')))}.yaml"
    path.write_text(yaml.safe_dump({"seed": 1, "datasets": [name], name: section}))
    return datasets.load_config(name, path)


def digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, by relative path."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def lidc_demo(root: Path, demo: DemoParams = LIDC_SMALL) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The LIDC demo written under ``root / "raw"``, and its lesion and slice tables, returned
    and written beside it (``lesions.parquet``, ``lesions_slices.parquet``) as prepare_lidc
    reads them."""
    write_lidc_demo(demo, root / "raw")
    table, slices, _ = lesions.build_tables(root / "raw", PrepareParams(), "hash")
    pq.write_table(table.to_arrow(), root / "lesions.parquet")
    pq.write_table(slices.to_arrow(), root / "lesions_slices.parquet")
    return table, slices
