"""Decoding throughput per dataset: the pipeline's path against a plain PIL decode + resize.

For each dataset, image files are taken from its raw folder (``<ds>.raw`` in params.yaml;
run ``dvc repro demo@<ds>`` first for the demo data) and decoded twice, in one process:

- ``oncopipe``: the dataset's ``preprocess_one`` (exactly what ``prepare`` does per file:
  OpenCV, reduced-scale JPEG decoding where the output size allows, area resize);
- ``PIL``: ``Image.open(path).convert("RGB")``, a full decode, then ``resize`` to the same
  output size (bilinear) and conversion to the same (3, H, W) uint8 array.

Files whose longer side is at least 2000 px are also reported on their own ("large"), since
that is where reduced-scale decoding pays. Usage (from the repository root)::

    python benchmarks/decode.py pcam isic [--limit 400] [--repeat 3] [--prepare size=500]

``--prepare key=value`` overrides a field of each dataset's ``prepare`` section (integers are
parsed), e.g. to measure ISIC at the reference 500 px instead of the demo's size.

It prints a Markdown table (images per second, best of ``--repeat``, and the ratio).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from oncopipe import config, datasets
from oncopipe.images import image_size

SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png")
LARGE_SIDE = 2000


def image_files(root: Path, limit: int) -> list[Path]:
    """Up to ``limit`` image files under ``root``, evenly spread over the sorted listing."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    if len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).astype(int)]
    return files


def pil_decode(path: Path, height: int, width: int) -> np.ndarray:
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(rgb).transpose(2, 0, 1).copy()


def throughput(fn: Callable[[Path], np.ndarray], files: list[Path], repeat: int) -> float:
    """Images per second, best of ``repeat`` passes."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for path in files:
            fn(path)
        best = min(best, time.perf_counter() - start)
    return len(files) / best


def bench(name: str, limit: int, repeat: int,
          overrides: dict[str, str]) -> list[tuple[str, int, float, float]]:
    cfg = config.load(name)
    fields = {f.name: f for f in dataclasses.fields(cfg.prepare)}
    known = {k: int(v) if v.isdigit() else v for k, v in overrides.items() if k in fields}
    if known:
        cfg = dataclasses.replace(cfg, prepare=dataclasses.replace(cfg.prepare, **known))
    module = datasets.module(name, "prepare")
    files = image_files(cfg.raw, limit)
    if not files:
        raise SystemExit(f"{cfg.raw}: no image files (run `dvc repro demo@{name}` first)")
    _, height, width = module.preprocess_one(cfg, files[0]).shape
    groups = [("all", files)]
    large = [p for p in files if max(image_size(p)) >= LARGE_SIDE]
    if large and len(large) < len(files):
        groups.append((f"large (>= {LARGE_SIDE} px)", large))
    rows = []
    for label, group in groups:
        ours = throughput(lambda p: module.preprocess_one(cfg, p), group, repeat)
        plain = throughput(lambda p: pil_decode(p, height, width), group, repeat)
        size = f"{height}x{width}"
        rows.append((f"{name} {label} -> {size}", len(group), ours, plain))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datasets", nargs="+", choices=datasets.NAMES)
    parser.add_argument("--limit", type=int, default=400, help="files per dataset")
    parser.add_argument("--repeat", type=int, default=3, help="passes; the best is kept")
    parser.add_argument("--prepare", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override fields of <ds>.prepare where the dataset has them")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.prepare)
    print("| files | n | oncopipe (img/s) | PIL (img/s) | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in args.datasets:
        for label, n, ours, plain in bench(name, args.limit, args.repeat, overrides):
            print(f"| {label} | {n} | {ours:.0f} | {plain:.0f} | {ours / plain:.2f}x |")


if __name__ == "__main__":
    main()
