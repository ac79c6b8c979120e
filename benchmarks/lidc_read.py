"""LIDC read path, side by side: series load, per-series crop path, memory per worker.

A CT series at real size (512 x 512, LIDC's tags: int16, padding -2000 written as US 63536,
intercept -1024; and the ~200 other elements a scanner writes, sequences and private groups,
which the header pass walks past; tests/lidc_reference.py ``write_series`` with
``scanner_header``) is written once under ``--dir`` and
read with the page cache warm, so this compares readers, not disks. Every timed comparison is
interleaved (A, B, C, A, B, C, ...; ``repeats`` rounds after one warm-up round), so a change
in machine load hits every method alike; each row gives the median and best time and the
ratio of the medians, and the load average before and after.

- **Series load** (``--slices`` slices): ``floor`` = the file bytes (``open().read()``) +
  ``np.frombuffer`` at the pixel offset, per file; ``oncopipe`` =
  :func:`oncopipe.datasets.lidc.pixels.read_series` from the header pass's layouts (what
  prepare_lidc runs: an int16 volume, HU computed later per crop region); ``oncopipe + HU``
  adds the float32 HU of the whole volume (for comparison only, prepare never does it);
  ``SimpleITK`` = ``ImageSeriesReader`` on the same z-sorted files; ``pydicom`` = ``dcmread``
  + ``pixel_array`` per file; ``before`` = the path this replaced (headers parsed again, then
  ``dcmread`` + float32 HU per slice); ``MONAI`` = ``LoadImage`` on the folder (its
  PydicomReader; ITKReader needs ``itk``, not installed). Each method's volume is checked
  against our HU (padding aside, which only we apply): max |difference|.
- **Crop path**: everything prepare_lidc does for one series with ``--lesions`` lesions (2D
  crops on up to 5 annotated slices each, a 3D crop each), ``before`` (tests/lidc_reference.py
  ``crop_series``) against ``oncopipe`` (``prepare._crop_series``); the crops must be equal
  bit for bit.
- **Peak memory per worker** (``--memory-slices`` slices): the crop path of one series in a
  fresh process, its peak resident memory (VmHWM), for both paths, and the RSS of the imports alone.

Usage (figures in docs/benchmarks.md)::

    python benchmarks/lidc_read.py [--repeats 5] [--slices 260] [--memory-slices 764]
                                   [--dir /tmp/oncopipe-bench-lidc]

``run(repeats)`` returns the rows (list of dicts) for ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the reference path and the series writer
sys.path.insert(0, str(ROOT))  # run as a script: the harness

from lidc_reference import crop_series, read_volume, write_series  # noqa: E402

from benchmarks import harness  # noqa: E402
from oncopipe.core.config import (  # noqa: E402
    DatasetConfig,
    EvaluateParams,
    ShardParams,
    TrainParams,
)
from oncopipe.datasets.lidc import crops, prepare  # noqa: E402
from oncopipe.datasets.lidc.params import CropParams, DemoParams, PrepareParams  # noqa: E402
from oncopipe.datasets.lidc.pixels import read_series  # noqa: E402
from oncopipe.datasets.lidc.series import (  # noqa: E402
    HEADER_CACHE,
    SeriesHeader,
    nearest_slice,
    read_headers,
)

STEP_MM = 1.25


_WRITTEN = ".complete-scanner-header"  # a folder written by an older version is rewritten


def series(root: Path, n: int) -> SeriesHeader:
    """The ``n``-slice benchmark series under ``root`` (written once), from its header pass."""
    folder = root / f"series-{n}"
    done = folder / _WRITTEN
    if not done.exists():
        for old in folder.glob("*.dcm"):
            old.unlink()
        write_series(folder, -300.0 + STEP_MM * np.arange(n), seed=n, scanner_header=True)
        done.touch()
    (header,), rejects = read_headers(sorted(folder.glob("*.dcm")))
    if rejects:
        raise RuntimeError(f"{folder}: benchmark series has rejects {rejects[:1]}")
    return header


def lesions(header: SeriesHeader, n: int) -> list[dict]:
    """``n`` lesions spread through the lungs, as rows of the lesion table."""
    out = []
    for i in range(n):
        k = (i + 1) * len(header.slices) / (n + 1)
        row, col = 230 + 10 * (i % 3), 150 + 200 * (i % 2)
        x, y, z = header.voxel_to_mm(k, row, col)
        slices = list(range(max(0, round(k) - 3), min(len(header.slices), round(k) + 4)))
        out.append({"lesion_id": f"L{i}", "x_mm": x, "y_mm": y, "z_mm": z, "slices": slices})
    return out


def _floor(header: SeriesHeader) -> list[np.ndarray]:
    out = []
    for s in header.slices:
        with open(s.path, "rb") as fp:
            data = fp.read()
        out.append(np.frombuffer(data, "<i2", header.shape_yx[0] * header.shape_yx[1],
                                 s.layout.header_bytes))
    return out


def _sitk(header: SeriesHeader) -> sitk.Image:
    """The image (HU, int32 here) without the array copy; a view would outlive the image."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(s.path) for s in header.slices])
    return reader.Execute()


def _pydicom(header: SeriesHeader) -> np.ndarray:
    vol = np.empty((len(header.slices), *header.shape_yx), np.int16)
    for k, s in enumerate(header.slices):
        vol[k] = pydicom.dcmread(s.path).pixel_array
    return vol


def _before_load(header: SeriesHeader) -> np.ndarray:
    return read_volume(prepare.load_series(header.folder, header.series_uid))


def _monai_loader() -> Callable[[SeriesHeader], np.ndarray] | None:
    if importlib.util.find_spec("monai") is None:
        return None
    from monai.transforms import LoadImage

    load = LoadImage(image_only=True)

    def _monai(header: SeriesHeader) -> np.ndarray:
        # (x, y, z) in the reader's order -> ours (z increasing, y, x)
        arr = np.asarray(load(str(header.folder)))
        return np.ascontiguousarray(np.transpose(arr, (2, 1, 0)))

    return _monai


def _diff(got: np.ndarray, hu: np.ndarray, pad: np.ndarray) -> str:
    got = np.asarray(got, np.float32).reshape(hu.shape)
    return f"max |d HU| {float(np.abs(got - hu)[~pad].max()):g} (padding aside)"


def load_rows(header: SeriesHeader, repeats: int) -> list[dict]:
    methods: dict[str, Callable[[SeriesHeader], object]] = {
        "floor (bytes + np.frombuffer)": _floor,
        "oncopipe": read_series,
        "oncopipe + HU of the whole volume": lambda h: read_series(h).hu(slice(None)),
        "SimpleITK ImageSeriesReader": _sitk,
        "pydicom dcmread + pixel_array": _pydicom,
        "before (headers again + pydicom HU)": _before_load,
    }
    monai = _monai_loader()
    if monai is not None:
        methods["MONAI LoadImage"] = monai
    volume = read_series(header)
    hu = volume.hu(slice(None))
    pad = volume.stored == -2000
    checks = {"oncopipe": "int16 as stored, HU per crop region",
              "oncopipe + HU of the whole volume": "reference",
              "floor (bytes + np.frombuffer)": _diff(np.stack(_floor(header)) - 1024, hu, pad),
              "SimpleITK ImageSeriesReader": _diff(sitk.GetArrayFromImage(_sitk(header)), hu,
                                                 pad),
              "pydicom dcmread + pixel_array": _diff(_pydicom(header) - 1024, hu, pad),
              "before (headers again + pydicom HU)": _diff(_before_load(header), hu, pad)}
    if monai is not None:
        checks["MONAI LoadImage"] = _diff(monai(header), hu, pad)
    times = harness.interleaved({m: (lambda f=f: f(header)) for m, f in methods.items()}, repeats)
    mb = sum(s.layout.size for s in header.slices) / 2**20
    size = f"{len(header.slices)} x 512 x 512 ({mb:.0f} MB)"
    return harness.timing_records("LIDC series load", size, times, "oncopipe", checks)


def _needed_floor(header: SeriesHeader, ks: np.ndarray) -> list[np.ndarray]:
    """The floor of a step that needs slices ``ks``: their file bytes + ``np.frombuffer``."""
    out = []
    for k in ks:
        s = header.slices[k]
        with open(s.path, "rb") as fp:
            data = fp.read()
        out.append(np.frombuffer(data, "<i2", header.shape_yx[0] * header.shape_yx[1],
                                 s.layout.header_bytes))
    return out


def crop_rows(header: SeriesHeader, n_lesions: int, repeats: int) -> list[dict]:
    p = CropParams(max_slices=5)
    marks = lesions(header, n_lesions)
    job = prepare._Job(header, marks, p)
    new = prepare._crop_series(job)
    old_2d, old_3d = crop_series(header.folder, header.series_uid, marks, p)
    same_2d = all(np.array_equal(a[2], b) for a, b in zip(new.crops_2d, old_2d, strict=True))
    diff_3d = max(float(np.abs(a[1].astype(np.float32) - b.astype(np.float32)).max())
                  for a, b in zip(new.crops_3d, old_3d, strict=True))
    needed = np.unique(np.concatenate([
        np.union1d(prepare.central(m["slices"], p.max_slices), crops.slices_3d(
            header, (m["x_mm"], m["y_mm"], m["z_mm"]), p)) for m in marks]))
    n2d = len(old_2d)
    times = harness.interleaved({
        f"floor (bytes of the {len(needed)} slices the crops need + np.frombuffer)":
            lambda: _needed_floor(header, needed),
        "before (pydicom, whole volume float32 + SimpleITK)":
            lambda: crop_series(header.folder, header.series_uid, marks, p),
        "oncopipe": lambda: prepare._crop_series(job),
    }, repeats)
    check = (f"{n2d} 2D crops {'identical' if same_2d else 'DIFFERENT'}, {len(old_3d)} 3D "
             f"crops max |d| {diff_3d:.2g} (window units; float16 step 2^-11)")
    if diff_3d > 2 ** -11:
        check += " DIFFERENT"
    size = f"{len(header.slices)} x 512 x 512, {n_lesions} lesions"
    return harness.timing_records("LIDC crop path, one series", size, times, "oncopipe",
                                  {"oncopipe": check})


def _config(input_kind: str) -> DatasetConfig:
    prepare_params = PrepareParams(crops=dataclasses.replace(CropParams(), input=input_kind))
    return DatasetConfig(name="lidc", seed=0, raw=Path("."), task="nodule_type",
                         profile="demo", demo=DemoParams(), prepare=prepare_params,
                         shard=ShardParams(), train=TrainParams(), evaluate=EvaluateParams())


def input_rows(header: SeriesHeader, repeats: int) -> list[dict]:
    """``preprocess_one`` (what predict and serve run per request) on one series, 2D and 3D:
    the same series sent again (as serve gets it: unpacked into another folder each time, so
    the two copies alternate) against a new series (every header parsed) and the floor."""
    copy = header.folder.with_name(header.folder.name + "-copy")
    if not (copy / _WRITTEN).exists():
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(header.folder, copy)
    folders = [header.folder, copy]
    point = header.voxel_to_mm(len(header.slices) / 2, 250, 180)
    k = nearest_slice(header.zs, point[2])
    cfg_2d, cfg_3d = _config("2d"), _config("3d")
    turn = [0]

    def again(cfg: DatasetConfig) -> np.ndarray:
        turn[0] += 1
        return prepare.preprocess_one(cfg, folders[turn[0] % 2], point)

    def new(cfg: DatasetConfig) -> np.ndarray:
        HEADER_CACHE.clear()
        return prepare.preprocess_one(cfg, header.folder, point)

    same = (np.array_equal(again(cfg_2d), new(cfg_2d))
            and np.array_equal(again(cfg_3d), new(cfg_3d)))
    mb = sum(s.layout.size for s in header.slices) / 2**20
    times = harness.interleaved({
        f"floor (the input's {mb:.0f} MB: every file read + np.frombuffer)":
            lambda: _needed_floor(header, np.arange(len(header.slices))),
        "oncopipe 2D, same series again (headers cached)": lambda: again(cfg_2d),
        "oncopipe 3D, same series again (headers cached)": lambda: again(cfg_3d),
        "oncopipe 2D, new series (every header parsed)": lambda: new(cfg_2d),
        "oncopipe 3D, new series (every header parsed)": lambda: new(cfg_3d),
    }, repeats)
    check = ("same crops as a new series" if same else "DIFFERENT from a new series") + (
        f"; reads slice {k} (2D) or {len(crops.slices_3d(header, point, cfg_3d.prepare.crops))}"
        " slices (3D)")
    size = f"{len(header.slices)} x 512 x 512 ({mb:.0f} MB), a scanner's header in each file"
    return harness.timing_records("LIDC per-input path (preprocess_one)", size, times,
                                  "oncopipe 2D, same series again (headers cached)",
                                  {"oncopipe 2D, same series again (headers cached)": check})


# ru_maxrss survives fork + exec (a child starts with its parent's peak): read VmHWM instead.
_MEMORY_CHILD = """
import json, re, sys
sys.path.insert(0, sys.argv[1] + "/tests"); sys.path.insert(0, sys.argv[1] + "/benchmarks")
import lidc_read
from oncopipe.datasets.lidc import prepare
from oncopipe.datasets.lidc.params import CropParams
def peak():
    status = open("/proc/self/status").read()
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
base = peak()
header = lidc_read.series(lidc_read.Path(sys.argv[2]), int(sys.argv[3]))
marks = lidc_read.lesions(header, int(sys.argv[5]))
p = CropParams(max_slices=5)
if sys.argv[4] == "oncopipe":
    prepare._crop_series(prepare._Job(header, marks, p))
else:
    lidc_read.crop_series(header.folder, header.series_uid, marks, p)
print(json.dumps([base, peak()]))
"""


def memory_rows(workdir: Path, n_slices: int, n_lesions: int) -> list[dict]:
    series(workdir, n_slices)  # written before measuring
    rows = []
    for method in ("oncopipe", "before"):
        out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(ROOT), str(workdir),
                              str(n_slices), method, str(n_lesions)], check=True,
                             capture_output=True, text=True, env={**os.environ,
                                                                  "PYTHONPATH": str(ROOT)})
        base, peak = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"benchmark": "LIDC peak memory per worker", "method": method,
                     "size": f"{n_slices} x 512 x 512, {n_lesions} lesions",
                     "peak_rss_mb": round(peak / 1024), "imports_rss_mb": round(base / 1024)})
    return rows


def run(repeats: int = 5, slices: int = 260, memory_slices: int = 764, n_lesions: int = 6,
        workdir: Path | None = None, input_slices: int = 133) -> list[dict]:
    """All rows: series load, crop path, per-input path and peak memory (see the module
    docstring)."""
    workdir = Path(workdir or os.environ.get("ONCOPIPE_BENCH_DIR", "/tmp/oncopipe-bench-lidc"))
    header = series(workdir, slices)
    one = series(workdir, input_slices)
    return harness.load_stamped(
        lambda: load_rows(header, repeats) + crop_rows(header, n_lesions, repeats)
        + input_rows(one, repeats)
        + (memory_rows(workdir, memory_slices, n_lesions) if memory_slices else []))


MEMORY_COLUMNS = [harness.Column("method", "{method}", False),
                  harness.Column("peak RSS (MB)", "{peak_rss_mb}"),
                  harness.Column("of which imports (MB)", "{imports_rss_mb}")]


def table(rows: list[dict]) -> str:
    """The rows as Markdown tables, one per benchmark."""
    return harness.grouped_tables(
        rows, lambda first: MEMORY_COLUMNS if "peak_rss_mb" in first else harness.timing_columns(3),
        size_in_caption=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5,
                    help="interleaved rounds after a warm-up, median reported (default 5)")
    ap.add_argument("--slices", type=int, default=260,
                    help="slices of the series timed for load and crops (default 260)")
    ap.add_argument("--memory-slices", type=int, default=764,
                    help="slices of the series for the peak-memory run (default 764: "
                         "LIDC's longest); 0 skips it")
    ap.add_argument("--lesions", type=int, default=6, help="lesions to crop (default 6)")
    ap.add_argument("--input-slices", type=int, default=133,
                    help="slices of the per-input series (default 133)")
    ap.add_argument("--dir", type=Path, default=None,
                    help="where the series are written once and reused (default "
                         "$ONCOPIPE_BENCH_DIR or /tmp/oncopipe-bench-lidc)")
    args = ap.parse_args()
    rows = run(args.repeats, args.slices, args.memory_slices, args.lesions, args.dir,
               args.input_slices)
    print(table(rows))


if __name__ == "__main__":
    main()
