"""Several seeds, as the field reports them: mean, sd and every seed's figure.

A sweep over ``seed`` is queued and run by DVC (README, "Several seeds"); ``oncopipe results
--seeds`` reads the experiments back from ``dvc exp show --json`` and aggregates the test
figures of each dataset over them. ``seed`` drives the patient split, the initialisation and
the data order, so the spread includes that of the split.

Only experiments that differ in nothing but ``seed`` are aggregated together: a sweep that
changed anything else is refused (one line naming a key), since its spread would not be the
seeds'.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

from oncopipe.core.errors import InputError

FIGURES = ("balanced_accuracy", "accuracy", "auc", "sensitivity", "specificity")


class SeedsError(InputError):
    """The experiments cannot be aggregated (none, or not a seed sweep)."""


def read_experiments(cwd: Path = Path(".")) -> list[dict]:
    """``[{"name", "params", "metrics": {path: data}}]`` of every experiment ``dvc exp show``
    lists (the workspace and the commits themselves left out)."""
    proc = subprocess.run(["dvc", "exp", "show", "--json"], cwd=cwd, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise SeedsError(f"dvc exp show failed: {proc.stderr.strip()}")
    out = []
    for base in json.loads(proc.stdout or "[]"):
        for exp in base.get("experiments") or []:
            rev = exp["revs"][0]
            data = rev.get("data") or {}
            out.append({
                "name": rev.get("name") or rev.get("rev"),
                "params": (data.get("params") or {}).get("params.yaml", {}).get("data", {}),
                "metrics": {path: m.get("data", {})
                            for path, m in (data.get("metrics") or {}).items()}})
    return out


def _without_seed(params: dict) -> str:
    return json.dumps({k: v for k, v in params.items() if k != "seed"}, sort_keys=True)


def _differing_key(a: dict, b: dict, prefix: str = "") -> str:
    for key in sorted(set(a) | set(b)):
        if key == "seed" and not prefix:
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            found = _differing_key(va, vb, f"{prefix}{key}.")
            if found:
                return found
        elif va != vb:
            return f"{prefix}{key}"
    return ""


def aggregate(experiments: list[dict]) -> dict:
    """``{dataset: {figure: {"mean", "sd", "per_seed": {seed: value}}}}``; the last
    experiment of a seed counts when a seed was run twice."""
    if not experiments:
        raise SeedsError("no experiments to aggregate: queue a sweep over seed first "
                         "(dvc exp run --queue -S 'seed=1,2,3,4,5'; dvc queue start)")
    first = experiments[0]["params"]
    for exp in experiments[1:]:
        if _without_seed(exp["params"]) != _without_seed(first):
            key = _differing_key(first, exp["params"])
            raise SeedsError(f"experiment {exp['name']} differs from {experiments[0]['name']} in "
                             f"{key}, not only in seed: not a seed sweep (dvc exp remove the "
                             "others, or --rev the sweep's commit)")
    by_seed = {exp["params"].get("seed"): exp["metrics"] for exp in experiments}
    out: dict = {}
    for seed, files in sorted(by_seed.items(), key=lambda kv: str(kv[0])):
        for path, data in files.items():
            parts = Path(path).parts
            if len(parts) != 3 or parts[0] != "metrics" or parts[2] != "summary.json":
                continue  # evaluate's headline test figures (not train/metrics.json)
            for figure in FIGURES:
                value = data.get(figure)
                if isinstance(value, (int, float)):
                    out.setdefault(parts[1], {}).setdefault(figure, {"per_seed": {}})[
                        "per_seed"][seed] = float(value)
    for figures in out.values():
        for entry in figures.values():
            values = list(entry["per_seed"].values())
            mean = sum(values) / len(values)
            sd = (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
                  if len(values) > 1 else math.nan)
            entry.update(mean=mean, sd=sd)
    return out


def table(agg: dict) -> str:
    """Markdown: one row per dataset and figure, mean ± sd (n seeds), then each seed's."""
    rows = ["| dataset | figure | mean | sd | seeds | per seed |",
            "| --- | --- | ---: | ---: | ---: | --- |"]
    for ds, figures in sorted(agg.items()):
        for figure in FIGURES:
            if figure not in figures:
                continue
            e = figures[figure]
            sd = "-" if math.isnan(e["sd"]) else f"{e['sd']:.3f}"
            per = ", ".join(f"{seed}: {v:.3f}" for seed, v in e["per_seed"].items())
            rows.append(f"| {ds} | {figure} | {e['mean']:.3f} | {sd} | {len(e['per_seed'])} | "
                        f"{per} |")
    return "\n".join(rows) + "\n"
