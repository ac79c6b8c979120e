"""The metrics gate for CI: fail when a dataset's test metrics fall below the agreed floor.

Thresholds live in the repository, ``metrics/thresholds.yaml``, one mapping per dataset::

    lidc:
      balanced_accuracy: 0.80        # a number is a minimum
      auc: 0.85
      ece: {max: 0.25}               # or an explicit {min: ..., max: ...}

Every ``metrics/<dataset>/metrics.json`` found is reported; a dataset named in the thresholds
whose metrics file is missing is a failure (the pipeline did not produce it). With
``baseline`` (a git revision), ``dvc metrics diff`` compares with that revision and any gated
metric that moved the wrong way by more than ``tolerance`` is a regression too.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

THRESHOLDS_FILE = Path("metrics/thresholds.yaml")
LOWER_IS_BETTER = frozenset({"ece"})


class GateError(ValueError):
    """The thresholds or a metrics file cannot be read; the message names the file."""


@dataclass(frozen=True)
class Check:
    dataset: str
    metric: str
    value: float | None
    bound: str  # ">= 0.8", "<= 0.25", "baseline 0.91 -0.02"
    ok: bool


def read_thresholds(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{dataset: {metric: {"min": x} | {"max": y} | both}}``, validated."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise GateError(f"{path}: thresholds file not found") from None
    if not isinstance(data, dict):
        raise GateError(f"{path}: expected a mapping of dataset -> metric -> threshold")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for ds, metrics in data.items():
        if not isinstance(metrics, dict):
            raise GateError(f"{path}: {ds}: expected a mapping of metric -> threshold")
        out[ds] = {}
        for name, spec in metrics.items():
            spec = {"min": spec} if isinstance(spec, (int, float)) else spec
            if not isinstance(spec, dict) or not spec or set(spec) - {"min", "max"} or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool)
                    for v in spec.values()):
                raise GateError(f"{path}: {ds}.{name}: expected a number or {{min: x, max: y}}, "
                                f"got {spec!r}")
            out[ds][name] = {k: float(v) for k, v in spec.items()}
    return out


def read_metrics(metrics_dir: Path) -> dict[str, dict]:
    """``{dataset: metrics.json content}`` for every ``<metrics_dir>/*/metrics.json``."""
    found = {}
    for path in sorted(metrics_dir.glob("*/metrics.json")):
        try:
            found[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise GateError(f"{path}: not valid JSON ({exc})") from None
    return found


def _lookup(metrics: dict, name: str) -> float | None:
    value: object = metrics
    for part in name.split("."):  # nested keys: per_class.malignant.sensitivity
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def check(thresholds: dict, found: dict[str, dict]) -> list[Check]:
    checks = []
    for ds in sorted(set(thresholds) | set(found)):
        if ds not in found:
            checks.append(Check(ds, "metrics.json", None, "missing", False))
            continue
        for name, spec in sorted(thresholds.get(ds, {}).items()):
            value = _lookup(found[ds], name)
            for kind, bound in sorted(spec.items()):
                ok = value is not None and (value >= bound if kind == "min" else value <= bound)
                checks.append(Check(ds, name, value, f"{'>=' if kind == 'min' else '<='} "
                                    f"{bound:g}", ok))
        if ds not in thresholds:
            checks.append(Check(ds, "(no thresholds)", None, "-", True))
    return checks


def baseline_checks(thresholds: dict, baseline: str, tolerance: float,
                    metrics_dir: Path) -> list[Check]:
    """Compare with ``baseline`` via ``dvc metrics diff``; gated metrics only."""
    proc = subprocess.run(["dvc", "metrics", "diff", baseline, "--json"], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise GateError(f"dvc metrics diff {baseline} failed: {proc.stderr.strip()}")
    diff = json.loads(proc.stdout or "{}")
    checks = []
    for ds, spec in sorted(thresholds.items()):
        entry = diff.get(str(metrics_dir / ds / "metrics.json"), {})
        for name in sorted(spec):
            d = entry.get(name)
            if not d or d.get("old") is None or d.get("new") is None:
                continue
            change = float(d["new"]) - float(d["old"])
            worse = change > tolerance if name in LOWER_IS_BETTER else change < -tolerance
            checks.append(Check(ds, name, float(d["new"]),
                                f"{baseline} {float(d['old']):g} {change:+.3f}", not worse))
    return checks


def table(checks: list[Check]) -> str:
    rows = [("dataset", "metric", "value", "bound", "result")]
    rows += [(c.dataset, c.metric, "-" if c.value is None else f"{c.value:.4f}", c.bound,
              "ok" if c.ok else "FAIL") for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(thresholds_file: Path = THRESHOLDS_FILE, metrics_dir: Path = Path("metrics"),
        baseline: str | None = None, tolerance: float = 0.02) -> int:
    """Print the table; return 0 when every check passes, 1 otherwise."""
    thresholds = read_thresholds(thresholds_file)
    checks = check(thresholds, read_metrics(metrics_dir))
    if baseline:
        checks += baseline_checks(thresholds, baseline, tolerance, metrics_dir)
    print(table(checks))
    failed = [c for c in checks if not c.ok]
    print(f"gate: {len(failed)} of {len(checks)} check(s) failed" if failed
          else f"gate: all {len(checks)} check(s) passed")
    return 1 if failed else 0
