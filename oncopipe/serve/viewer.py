"""What the page's viewer needs besides the prediction: the volume to slice, the lesions of
the prepared table on it, the examples, the model's input with its Grad-CAM map as bytes,
and the data and model cards.

The browser slices the volume itself: the server sends it once, as raw little-endian int16
HU (``volume.raw``, (D, H, W) C order), so every slice of a 764-slice series is reachable
and window/level is applied on the client without another request. The model's input and
its map go as base64 uint8 arrays for the same reason (the opacity of the overlay changes
on the client).
"""

from __future__ import annotations

import base64
import contextlib
from pathlib import Path

import numpy as np
import polars as pl
import torch

from oncopipe.core.config import DatasetConfig
from oncopipe.core.contract import DatasetSpec
from oncopipe.core.manifest import read_manifest
from oncopipe.ingest import input_warnings
from oncopipe.learn.loader import to_float
from oncopipe.serve.sessions import Session
from oncopipe.serve.uploads import client_name

LESIONS_FILE = "lesions.parquet"  # a prepared table of findings, one row per lesion
LESION_COLUMNS = ("lesion_id", "kind", "series_uid", "x_mm", "y_mm", "z_mm", "diameter_mm")
CARDS = {"data": ("data/exports/{ds}/DATACARD.md",), "model": ("models/{ds}/MODELCARD.md",)}
MAX_CARD_BYTES = 256 << 10


def check_and_view(session: Session, spec: DatasetSpec, cfg: DatasetConfig) -> None:
    """Refuse a kept input now rather than at the first prediction: through the dataset's
    view, whose volume is written beside it as raw int16 for the page to slice, or, for
    inputs without one, through ``preprocess_one`` (an image: cheap)."""
    if spec.view is None:
        if not spec.predict_input.point:
            with input_warnings.collecting():
                spec.preprocess_one(cfg, session.input)
        return
    volume, geometry = spec.view(cfg, session.input)
    volume = np.ascontiguousarray(volume, dtype="<i2")
    volume.tofile(session.volume_path)
    session.view = {"shape": list(volume.shape), "dtype": "int16", "geometry": geometry}


def lesions(root: Path, dataset: str, geometry: dict) -> list[dict]:
    """The prepared table's lesions of this series (matched by ``series_uid``): where the
    readers found something, to outline on the viewer. Empty when the series is not one of
    the prepared ones or the dataset has no such table."""
    uid = geometry.get("series_uid")
    path = root / "data" / "prepared" / dataset / LESIONS_FILE
    if not uid or not path.is_file():
        return []
    try:
        table = pl.read_parquet(path, columns=list(LESION_COLUMNS))
    except (OSError, pl.exceptions.PolarsError):
        return []
    rows = table.filter(pl.col("series_uid") == uid).sort("lesion_id")
    return [{"id": r["lesion_id"], "kind": r["kind"], "point": [r["x_mm"], r["y_mm"], r["z_mm"]],
             "diameter_mm": r["diameter_mm"]} for r in rows.iter_rows(named=True)]


def _inside(path: Path, root: Path) -> bool:
    with contextlib.suppress(OSError):
        return path.resolve().is_relative_to(root.resolve()) and path.exists()
    return False


def examples(root: Path, spec: DatasetSpec, cfg: DatasetConfig) -> list[dict]:
    """One input per class from the prepared manifest (its first sample of each label):
    ``{"id", "label", "title", "file", "point"}``, ``file`` relative to the project. Only
    inputs inside the project folder are offered (never a path elsewhere on the machine);
    the point is the sample's (``x_mm``, ``y_mm``, ``z_mm``) when the dataset takes one."""
    path = root / "data" / "prepared" / spec.name / "manifest.parquet"
    if not path.is_file():
        return []
    try:
        df, meta = read_manifest(path)
    except (OSError, ValueError, pl.exceptions.PolarsError):
        return []
    point_cols = ("x_mm", "y_mm", "z_mm")
    takes_point = spec.predict_input.point and all(c in df.columns for c in point_cols)
    raw = cfg.raw if cfg.raw.is_absolute() else root / cfg.raw
    out: list[dict] = []
    for label in sorted(df["label"].unique().to_list()):
        row = df.filter(pl.col("label") == label).sort("sample_id").row(0, named=True)
        source = raw / str(row["source"]).split(";", 1)[0]
        if spec.predict_input.kind == "series" and source.is_file():
            source = source.parent
        if not _inside(source, root):
            continue
        name = meta.class_names[int(label)]
        out.append({"id": len(out), "label": name, "title": f"a demo {name} case",
                    "file": source.resolve().relative_to(root.resolve()).as_posix(),
                    "point": [round(float(row[c]), 2) for c in point_cols] if takes_point
                    else None})
    return out


def example_session(root: Path, example: dict, folder: Path) -> Session:
    """A session over an example's file in the project (nothing copied)."""
    source = root / example["file"]
    return Session(token="", dataset="", name=client_name(example["file"]), folder=folder,
                   input=source, public_paths={str(source): example["file"],
                                               str(folder): example["file"]})


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _u8(a: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(a, 0, 1) * 255).astype(np.uint8)


def model_view(sample: np.ndarray, cam: np.ndarray) -> dict:
    """The model's input ((C, H, W) or (C, D, H, W), in [0, 1]) and its Grad-CAM map (the
    same spatial grid, [0, 1]) as uint8 arrays, base64: the page draws the map over the
    input at the opacity the user picks."""
    x = to_float(torch.from_numpy(np.ascontiguousarray(sample))).numpy()
    u8, heat = _u8(x), _u8(cam)
    return {"shape": list(u8.shape), "input": _b64(u8), "cam": _b64(heat)}


def map_on_scan(spec: DatasetSpec, cfg: DatasetConfig, view: dict | None,
                point: tuple[float, float, float] | None, cam: np.ndarray) -> dict | None:
    """The Grad-CAM map placed on the viewer's scan, for a dataset whose model input is a
    part of it (an LIDC crop around the point): the dataset's ``input_on_view`` gives the
    slice and the rectangle in that slice's pixels from the crop parameters the prediction
    used, so the page only draws; the map goes as a base64 uint8 array of ``shape``.
    ``None`` without a view (an input predicted without being kept) or such a part."""
    if spec.input_on_view is None or view is None or point is None:
        return None
    placed = dict(spec.input_on_view(cfg, view["geometry"], point, cam))
    heat = _u8(placed.pop("map"))
    return {**placed, "shape": list(heat.shape), "cam": _b64(heat)}


def cards(root: Path, dataset: str) -> dict[str, str | None]:
    """The data card (written by the export stage) and the model card (by evaluate), as
    Markdown text; ``None`` for one not made yet."""
    out: dict[str, str | None] = {}
    for kind, candidates in CARDS.items():
        out[kind] = None
        for pattern in candidates:
            path = root / pattern.format(ds=dataset)
            if path.is_file() and path.stat().st_size <= MAX_CARD_BYTES:
                out[kind] = path.read_text(encoding="utf-8", errors="replace")
                break
    return out
