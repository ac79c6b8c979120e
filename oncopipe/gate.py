"""The metrics gate for CI: fail when a dataset's test metrics fall below the agreed floor.

Thresholds live in the repository, ``metrics/thresholds.yaml``, one section per train
profile (``demo``, ``reference``), one mapping per dataset in each::

    demo:                              # floors for the synthetic demo data (CI)
      lidc:
        balanced_accuracy: 0.80        # a number is a minimum
        ece: {max: 0.25}               # or an explicit {min: ..., max: ...}
        auc: {ci_lower: 0.6}           # or a minimum of the interval's lower bound
    reference:                         # the published figures, for real data
      lidc:
        accuracy: 0.93

Each dataset is gated with the floors of its own profile, ``<dataset>.profile`` in
``params.yaml`` (the key that also selects its train recipe), or of the profile given with
``--profile``. A file without profile sections applies to every profile. Metrics whose
``provenance.raw.source`` is ``demo`` are never held to ``reference`` floors: the gate
refuses with one line (the published figures are for the real data).

Every ``metrics/<dataset>/metrics.json`` found is reported; a dataset with floors in its
profile whose metrics file is missing is a failure (the pipeline did not produce it). With
``baseline`` (a git revision), ``dvc metrics diff`` compares with that revision and any gated
metric that moved the wrong way by more than ``tolerance`` is a regression too.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BeforeValidator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from oncopipe.core import config
from oncopipe.core.errors import InputError, ParamsError
from oncopipe.core.settings import SETTINGS, Float, validate

THRESHOLDS_FILE = Path("metrics/thresholds.yaml")
LOWER_IS_BETTER = frozenset({"ece"})
PROFILES = tuple(f.name for f in fields(config.TrainProfiles))
DEFAULT_PROFILE = config.DEFAULT_PROFILE


class GateError(InputError):
    """The thresholds or a metrics file cannot be read; the message names the file."""


@dataclass(frozen=True)
class Check:
    dataset: str
    metric: str
    value: float | None
    bound: str  # ">= 0.8", "<= 0.25", "baseline 0.91 -0.02"
    ok: bool
    profile: str = DEFAULT_PROFILE  # whose floors


def _point_is_min(value: object) -> object:
    """A bare number is a minimum; anything else must be the mapping."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"min": value}
    if not isinstance(value, dict):
        raise ValueError(f"expected a number or {{min: x, max: y, ci_lower: z}}, got {value!r}")
    return value


@pydantic_dataclass(frozen=True, config=SETTINGS)
class Floor:
    """The bounds on one metric: ``0.8`` in the file is ``{min: 0.8}``."""

    min: Float | None = None
    max: Float | None = None
    ci_lower: Float | None = None  # the lower end of the metric's confidence interval

    def __post_init__(self) -> None:
        if not self.bounds():
            raise ValueError("expected a number or {min: x, max: y, ci_lower: z}, got {}")

    def bounds(self) -> dict[str, float]:
        """``{"min": x, "max": y, "ci_lower": z}``, the bounds that are set."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


FloorsFile = dict[str, dict[str, Annotated[Floor, BeforeValidator(_point_is_min)]]]
Floors = dict[str, dict[str, dict[str, float]]]  # {dataset: {metric: {"min"|"max"|"ci_lower": x}}}
Metrics = dict[str, Any]  # a metrics.json: figures, nested per class


def _read_floors(path: Path, data: object, where: str) -> Floors:
    try:
        floors: dict[str, dict[str, Floor]] = validate(FloorsFile, data, where)
    except ParamsError as exc:
        raise GateError(f"{path}: {exc}") from None
    return {ds: {name: floor.bounds() for name, floor in metrics.items()}
            for ds, metrics in floors.items()}


def read_thresholds(path: Path) -> dict[str, Floors]:
    """``{profile: {dataset: {metric: {"min": x} | {"max": y} | both}}}``, validated.

    A file without profile sections gives the same floors to every profile.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise GateError(f"{path}: thresholds file not found") from None
    if not isinstance(data, dict):
        raise GateError(f"{path}: expected a mapping of profile -> dataset -> metric -> "
                        "threshold")
    sections = set(data) & set(PROFILES)
    if not sections:
        floors = _read_floors(path, data, "")
        return {p: floors for p in PROFILES}
    if set(data) - sections:
        raise GateError(f"{path}: {sorted(set(data) - sections)[0]}: unknown profile section "
                        f"(expected {', '.join(PROFILES)}; or no sections at all)")
    return {p: _read_floors(path, data.get(p) or {}, p) for p in PROFILES}


def dataset_profiles(params_file: Path, datasets: list[str]) -> dict[str, str]:
    """Each dataset's ``<dataset>.profile`` from ``params.yaml`` (``demo`` when unset)."""
    try:
        params = config.read_params(params_file)
    except config.ParamsError as exc:
        raise GateError(f"{exc} (run from the project root, or pass --params or --profile)"
                        ) from None
    out = {}
    for ds in datasets:
        section = params.get(ds)
        profile = section.get("profile", DEFAULT_PROFILE) if isinstance(section, dict) \
            else DEFAULT_PROFILE
        if profile not in PROFILES:
            raise GateError(f"{params_file}: {ds}.profile: expected one of "
                            f"{', '.join(PROFILES)}, got {profile!r}")
        out[ds] = profile
    return out


def select(by_profile: dict[str, Floors], profiles: dict[str, str]) -> Floors:
    """The floors of each dataset's profile (datasets without floors there are left out)."""
    return {ds: by_profile[p][ds] for ds, p in sorted(profiles.items()) if ds in by_profile[p]}


def read_metrics(metrics_dir: Path) -> dict[str, Metrics]:
    """``{dataset: metrics.json content}`` for every ``<metrics_dir>/*/metrics.json``."""
    found = {}
    for path in sorted(metrics_dir.glob("*/metrics.json")):
        try:
            found[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise GateError(f"{path}: not valid JSON ({exc})") from None
    return found


def _lookup(metrics: Metrics, name: str) -> float | None:
    value: object = metrics
    for part in name.split("."):  # nested keys: per_class.malignant.sensitivity
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def check(thresholds: Floors, found: dict[str, Metrics],
          profiles: dict[str, str] | None = None) -> list[Check]:
    """Floors (already selected per dataset, see :func:`select`) against the metrics found."""
    profiles = profiles or {}
    checks = []
    for ds in sorted(set(thresholds) | set(found)):
        profile = profiles.get(ds, DEFAULT_PROFILE)
        if ds not in found:
            checks.append(Check(ds, "metrics.json", None, "missing", False, profile))
            continue
        for name, spec in sorted(thresholds.get(ds, {}).items()):
            for kind, bound in sorted(spec.items()):
                if kind == "ci_lower":  # the lower end of the figure's interval
                    value = _lookup(found[ds], f"ci.{name}.low")
                    checks.append(Check(ds, f"{name} (ci low)", value, f">= {bound:g}",
                                        value is not None and value >= bound, profile))
                    continue
                value = _lookup(found[ds], name)
                ok = value is not None and (value >= bound if kind == "min" else value <= bound)
                checks.append(Check(ds, name, value, f"{'>=' if kind == 'min' else '<='} "
                                    f"{bound:g}", ok, profile))
        if ds not in thresholds:
            checks.append(Check(ds, "(no thresholds)", None, "-", True, profile))
    return checks


def refuse_demo_at_reference(found: dict[str, dict], profiles: dict[str, str],
                             thresholds: Floors) -> None:
    """Raise when metrics of the synthetic demo data would be held to the published floors:
    passing them would say nothing about the method."""
    demo = [ds for ds in sorted(thresholds) if profiles.get(ds) == "reference" and ds in found
            and _lookup_str(found[ds], "provenance.raw.source") == "demo"]
    if demo:
        raise GateError(f"{', '.join(demo)}: metrics of the synthetic demo data cannot be held "
                        "to the reference floors (published figures for the real data); gate "
                        "them with --profile demo, or run on the real data")


def _lookup_str(metrics: dict, name: str) -> str | None:
    value: object = metrics
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value if isinstance(value, str) else None


def baseline_checks(thresholds: Floors, baseline: str, tolerance: float,
                    metrics_dir: Path, profiles: dict[str, str] | None = None) -> list[Check]:
    """Compare with ``baseline`` via ``dvc metrics diff`` (the headline figures of
    ``summary.json``); gated metrics found there only."""
    proc = subprocess.run(["dvc", "metrics", "diff", baseline, "--json"], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise GateError(f"dvc metrics diff {baseline} failed: {proc.stderr.strip()}")
    diff = json.loads(proc.stdout or "{}")
    checks = []
    for ds, spec in sorted(thresholds.items()):
        entry = diff.get(str(metrics_dir / ds / "summary.json"), {})  # evaluate's DVC metrics
        for name in sorted(spec):
            d = entry.get(name)
            if not d or d.get("old") is None or d.get("new") is None:
                continue
            change = float(d["new"]) - float(d["old"])
            worse = change > tolerance if name in LOWER_IS_BETTER else change < -tolerance
            checks.append(Check(ds, name, float(d["new"]),
                                f"{baseline} {float(d['old']):g} {change:+.3f}", not worse,
                                (profiles or {}).get(ds, DEFAULT_PROFILE)))
    return checks


def table(checks: list[Check]) -> str:
    rows = [("dataset", "profile", "metric", "value", "bound", "result")]
    rows += [(c.dataset, c.profile, c.metric, "-" if c.value is None else f"{c.value:.4f}",
              c.bound, "ok" if c.ok else "FAIL") for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(thresholds_file: Path = THRESHOLDS_FILE, metrics_dir: Path = Path("metrics"),
        baseline: str | None = None, tolerance: float = 0.02,
        params_file: Path = config.PARAMS_FILE, profile: str | None = None) -> int:
    """Print the table; return 0 when every check passes, 1 otherwise.

    ``profile`` gates every dataset with that profile's floors instead of the profile each
    dataset has in ``params_file``.
    """
    if profile is not None and profile not in PROFILES:
        raise GateError(f"profile {profile!r}: expected one of {', '.join(PROFILES)}")
    by_profile = read_thresholds(thresholds_file)
    found = read_metrics(metrics_dir)
    datasets = sorted(set(found).union(*by_profile.values()))
    profiles = ({ds: profile for ds in datasets} if profile is not None
                else dataset_profiles(params_file, datasets))
    thresholds = select(by_profile, profiles)
    refuse_demo_at_reference(found, profiles, thresholds)
    checks = check(thresholds, found, profiles)
    if baseline:
        checks += baseline_checks(thresholds, baseline, tolerance, metrics_dir, profiles)
    print(table(checks))
    failed = [c for c in checks if not c.ok]
    print(f"gate: {len(failed)} of {len(checks)} check(s) failed" if failed
          else f"gate: all {len(checks)} check(s) passed")
    return 1 if failed else 0
