"""What the pipeline made for one dataset, read from its outputs, for the web page.

Reads only what the stages wrote (``data/prepared/<ds>/``, ``data/shards/<ds>/summary.json``,
``metrics/<ds>/``) and says which of them are missing instead of failing: a dataset that
was prepared but not yet trained still shows its counts and rejects. Charts are PNGs drawn
here with matplotlib's object API (no pyplot state, so concurrent requests are safe), because
``dvc plots show`` renders with Vega loaded from a CDN and shows nothing offline.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from oncopipe.core.manifest import read_manifest

MAX_REJECT_ROWS = 200


class Outputs:
    """Where a dataset's outputs lie under the project ``root``."""

    def __init__(self, root: Path, dataset: str):
        self.dataset = dataset
        self.prepared = root / "data" / "prepared" / dataset
        self.shards = root / "data" / "shards" / dataset
        self.metrics = root / "metrics" / dataset
        self.curves = self.metrics / "train" / "plots" / "metrics"

    def image(self, name: str) -> Path | None:
        """The stored PNG behind a picture name of the page (a fixed list: no client paths)."""
        path = {"contact_sheet": self.prepared / "contact_sheet.png",
                "evaluation": self.metrics / "plots.png"}.get(name)
        return path if path is not None and path.is_file() else None


def read_json(path: Path) -> dict | None:
    """The JSON in ``path``, or ``None`` when it is missing or unreadable (not made yet)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _manifest(out: Outputs) -> dict | None:
    path = out.prepared / "manifest.parquet"
    if not path.is_file():
        return None
    df, meta = read_manifest(path)
    counts = df.group_by("label").len().sort("label")
    return {"samples": len(df), "patients": df["patient_id"].n_unique(),
            "patient_level": meta.patient_level, "layout": meta.layout,
            "class_counts": {meta.class_names[int(lab)]: int(n)
                             for lab, n in counts.iter_rows()},
            "normalisation": meta.normalisation}


def _rejects(out: Outputs) -> list[dict]:
    """Every ``*rejects.parquet`` of the prepared folder: counts by reason and the first rows."""
    found = []
    for path in sorted(out.prepared.glob("*rejects.parquet")):
        df = pl.read_parquet(path)
        prefix = path.name[: -len("rejects.parquet")]
        reasons = (df.with_columns(pl.col("reason").str.split(":").list.first().alias("kind"))
                   .group_by("kind").len().sort(["len", "kind"], descending=[True, False]))
        found.append({
            "file": path.name, "report": read_json(out.prepared / f"{prefix}report.json"),
            "total": len(df), "by_reason": {k: int(n) for k, n in reasons.iter_rows()},
            "rows": df.select("path", "reason").head(MAX_REJECT_ROWS).to_dicts(),
        })
    return found


def summary(root: Path, dataset: str) -> dict:
    """Everything the page shows for ``dataset``; ``missing`` lists outputs not there yet."""
    out = Outputs(root, dataset)
    shards = read_json(out.shards / "summary.json")
    result: dict[str, Any] = {
        "dataset": dataset,
        "manifest": _manifest(out),
        "rejects": _rejects(out),
        "splits": shards["splits"] if shards else None,
        "balance": shards.get("balance") if shards else None,
        "metrics": read_json(out.metrics / "metrics.json"),
        "training": read_json(out.metrics / "train" / "metrics.json"),
        "images": {name: out.image(name) is not None for name in ("contact_sheet", "evaluation")},
    }
    result["images"]["curves"] = bool(_curves(out))
    result["missing"] = [what for what, present in (
        ("data/prepared (prepare stage)", result["manifest"] is not None),
        ("data/shards summary.json (shard stage)", shards is not None),
        ("metrics.json (evaluate stage)", result["metrics"] is not None),
        ("training logs (train stage)", result["images"]["curves"]),
    ) if not present]
    return result


def _curves(out: Outputs) -> dict[str, list[tuple[float, float]]]:
    """dvclive's per-epoch TSVs: ``train/loss`` -> [(step, value), ...]."""
    series: dict[str, list[tuple[float, float]]] = {}
    if not out.curves.is_dir():
        return series
    for tsv in sorted(out.curves.rglob("*.tsv")):
        with open(tsv, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh, delimiter="\t"))
        try:
            points = [(float(r[0]), float(r[1])) for r in rows[1:] if len(r) >= 2]
        except ValueError:
            continue
        if points:
            series[tsv.relative_to(out.curves).with_suffix("").as_posix()] = points
    return series


def curves_png(root: Path, dataset: str) -> bytes | None:
    """Training curves: losses on the left, accuracies on the right (the learning rate,
    on another scale, is left out)."""
    series = _curves(Outputs(root, dataset))
    if not series:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), dpi=80)
    loss_ax, score_ax = fig.subplots(1, 2)
    for name, points in series.items():
        if name == "learning_rate":
            continue
        steps, values = np.array(points).T
        ax = loss_ax if name.endswith("loss") else score_ax
        ax.plot(steps + 1, values, "o-", markersize=3, label=name)
    loss_ax.set(xlabel="epoch", title="loss")
    score_ax.set(xlabel="epoch", title="accuracy", ylim=(0, 1.02))
    for ax in (loss_ax, score_ax):
        if ax.lines:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
