"""Coverage of the metrics' confidence intervals, simulated: the table in docs/intervals.md.

    python -m benchmarks.coverage                 # the published table (a few minutes)
    python -m benchmarks.coverage --quick --doc /tmp/intervals.md

For each sample size n and true rate p, draw many test splits, compute each method's 95%
interval and count how often it holds the true rate. Two designs: independent samples (one
per patient) and patients holding 4 samples each whose own rates scatter around p
(intra-patient correlation 0.3). Methods: the interval :mod:`oncopipe.learn.intervals` reports
(exact, clustered by patient), Wilson's interval on the samples (clustering ignored) and the
percentile bootstrap over patients (what metrics.json reported before). AUC is simulated on
independent samples, half positive, scores uniform with a shift that sets the true AUC.
A fixed seed: the same table every run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks import harness
from oncopipe.learn import intervals
from oncopipe.learn.metrics import _weighted_auc

DOC = Path("docs/intervals.md")
LEVEL = 0.95
SIZES = (5, 10, 20, 50, 100, 200, 500)
RATES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
PER_PATIENT = 4
ICC = 0.3
BOOT = 200


def _patients(n: int, clustered: bool) -> np.ndarray:
    """Patient id of each of ``n`` samples: one each, or groups of :data:`PER_PATIENT`."""
    return np.arange(n) // (PER_PATIENT if clustered else 1)


def _draw(rng: np.random.Generator, p: float, pid: np.ndarray) -> np.ndarray:
    """Success of each sample: patients' own rates from a beta around ``p`` (ICC)."""
    j = pid.max() + 1
    if p >= 1.0 or j == len(pid):
        rate = np.full(j, p)
    else:
        s = (1 - ICC) / ICC
        rate = rng.beta(p * s, (1 - p) * s, size=j)
    return rng.random(len(pid)) < rate[pid]


def _bootstrap(rng: np.random.Generator, hit: np.ndarray, pid: np.ndarray
               ) -> tuple[float, float]:
    j = pid.max() + 1
    a = np.bincount(pid, weights=hit.astype(float), minlength=j)
    m = np.bincount(pid, minlength=j).astype(float)
    w = rng.multinomial(j, np.full(j, 1.0 / j), size=BOOT)
    vals = (w @ a) / (w @ m)
    lo, hi = np.quantile(vals, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    return float(lo), float(hi)


def proportion_coverage(reps: int, boot_reps: int, sizes=SIZES, rates=RATES, seed: int = 0
                        ) -> list[dict]:
    """One record per (design, n, p): the coverage of each method."""
    rng = np.random.default_rng(seed)
    out = []
    for clustered in (False, True):
        for n in sizes:
            pid = _patients(n, clustered)
            for p in rates:
                held = {"ours": 0, "wilson": 0, "bootstrap": 0}
                for r in range(reps):
                    hit = _draw(rng, p, pid)
                    lo, hi = _ours(hit, pid)
                    held["ours"] += lo <= p <= hi
                    lo, hi = intervals.wilson(float(hit.sum()), n, LEVEL)
                    held["wilson"] += lo - 1e-12 <= p <= hi + 1e-12
                    if r < boot_reps:
                        lo, hi = _bootstrap(rng, hit, pid)
                        held["bootstrap"] += lo <= p <= hi
                out.append({"design": "clustered" if clustered else "independent", "n": n,
                            "patients": int(pid.max() + 1), "p": p,
                            "ours": held["ours"] / reps, "wilson": held["wilson"] / reps,
                            "bootstrap": held["bootstrap"] / boot_reps})
    return out


def _ours(hit: np.ndarray, pid: np.ndarray) -> tuple[float, float]:
    e = intervals.interval(intervals.clustered(hit, pid, LEVEL), LEVEL)
    return e["low"], e["high"]


def _auc_shift(auc: float) -> float:
    """Negatives U(0,1), positives U(s, 1+s): AUC = 1 - (1-s)^2/2."""
    return 1.0 - np.sqrt(2.0 * (1.0 - auc))


def auc_coverage(reps: int, sizes=SIZES, rates=RATES, seed: int = 1) -> list[dict]:
    """Coverage of the AUC interval (independent samples, half positive)."""
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        positive = np.arange(n) < max(1, n // 2)
        for auc in rates:
            s = _auc_shift(auc)
            held = 0
            for _ in range(reps):
                score = rng.random(n) + s * positive
                est = float(_weighted_auc(score, positive, np.ones((1, n)))[0])
                n_eff = float(min(positive.sum(), (~positive).sum()))
                e = intervals.interval(intervals.Proportion(est, n, n, n_eff), LEVEL)
                held += e["low"] <= auc <= e["high"]
            out.append({"n": n, "p": auc, "ours": held / reps})
    return out


def _grid(records: list[dict], key: str) -> str:
    rates = sorted({r["p"] for r in records})
    sizes = sorted({r["n"] for r in records})
    cell = {(r["n"], r["p"]): r[key] for r in records}
    lines = ["| n | " + " | ".join(f"p = {p:g}" for p in rates) + " |",
             "| ---: | " + " | ".join("---:" for _ in rates) + " |"]
    for n in sizes:
        lines.append(f"| {n} | " + " | ".join(f"{100 * cell[(n, p)]:.1f}" for p in rates)
                     + " |")
    return "\n".join(lines)


def render(props: list[dict], aucs: list[dict], reps: int, boot_reps: int) -> str:
    parts = [f"Coverage in % of nominal 95% intervals; {reps} simulated splits per cell "
             f"({boot_reps} for the bootstrap, {BOOT} resamples each); seed fixed."]
    for design in ("independent", "clustered"):
        rows = [r for r in props if r["design"] == design]
        what = ("one sample per patient" if design == "independent" else
                f"{PER_PATIENT} samples per patient, intra-patient correlation {ICC}")
        for key, name in (("ours", "exact, clustered by patient (reported)"),
                          ("wilson", "Wilson on samples"),
                          ("bootstrap", "percentile bootstrap over patients")):
            low = min(r[key] for r in rows)
            parts += ["", f"**{design}** ({what}): {name}; lowest {100 * low:.1f}%", "",
                      _grid(rows, key)]
    low = min(r["ours"] for r in aucs)
    parts += ["", f"**AUC** (independent samples, half positive): exact at "
              f"min(n_pos, n_neg) (reported); lowest {100 * low:.1f}%", "", _grid(aucs, "ours")]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few splits: a smoke test")
    ap.add_argument("--doc", type=Path, default=DOC, help="the Markdown file to update")
    args = ap.parse_args(argv)
    reps, boot_reps = (200, 50) if args.quick else (2000, 400)
    sizes = (5, 20, 100) if args.quick else SIZES
    props = proportion_coverage(reps, boot_reps, sizes)
    aucs = auc_coverage(reps // 2, sizes)
    harness.write_block(args.doc, "coverage", render(props, aucs, reps, boot_reps))
    print(f"wrote {args.doc}: lowest coverage of the reported intervals "
          f"{100 * min(r['ours'] for r in props):.1f}% (proportions), "
          f"{100 * min(r['ours'] for r in aucs):.1f}% (AUC)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
