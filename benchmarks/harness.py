"""The one piece of benchmark logic: interleaved timing, output checks, tables into the docs.

Why interleaved: on a shared machine the load moves while a benchmark runs. Timing method A
five times, then B five times, lets a burst of load land on one method only and moves their
ratio by up to 2x; running A, B, C, A, B, C, ... spreads it over all of them, so the ratios
(the point of a side-by-side table) stay comparable even when absolute times do not.

Every comparison module under ``benchmarks/`` builds :class:`Comparison` objects; the first
method is ours, and every other method's output is checked against ours (``check``), so a
faster method that computes something else is visible in the table instead of winning.

The modules with ``run(repeats) -> list[dict]`` (``lidc_read``, ``shard_write``) check their
outputs themselves and return plain records; they use the same timing loop
(:func:`interleaved`), the same median/best records (:func:`timing_records`), the same load
stamp (:func:`load_stamped`) and the same Markdown tables (:func:`grouped_tables`).
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class Agreement:
    """How one method's output compares with ours: a short text for the table, and a verdict."""

    text: str
    ok: bool


Check = Callable[[Any, Any], Agreement]  # (ours, theirs) -> Agreement


def same_array(max_abs: float = 0.0, mean_abs: float | None = None,
               view: Callable[[Any], Any] | None = None) -> Check:
    """Arrays agree when shapes match and the largest (or, if ``mean_abs`` is given, the mean)
    absolute difference is within tolerance. ``view`` maps the method's output onto our axis
    order first (other toolkits keep the file's voxel order)."""

    def check(ours: Any, theirs: Any) -> Agreement:
        a = np.asarray(ours, dtype=np.float64)
        b = np.asarray(view(theirs) if view else theirs, dtype=np.float64)
        if a.shape != b.shape:
            return Agreement(f"shape {b.shape} != {a.shape}", False)
        diff = np.abs(a - b)
        worst, mean = float(diff.max(initial=0.0)), float(diff.mean()) if diff.size else 0.0
        ok = mean <= mean_abs if mean_abs is not None else worst <= max_abs
        return Agreement(f"max {worst:.2g}, mean {mean:.2g}", ok)

    return check


def same_value(ours: Any, theirs: Any) -> Agreement:
    """Exact equality of plain values (counts, checksums)."""
    return Agreement("identical" if ours == theirs else f"{theirs!r} != {ours!r}",
                     ours == theirs)


@dataclass
class Method:
    """One way of doing the work; ``run`` does one unit of it and returns its output.

    ``check`` is None for rows that are not an alternative implementation (a floor such as
    inflating the file alone, or a part of the work such as the model step)."""

    name: str
    run: Callable[[], Any]
    check: Check | None = None
    #: why this alternative can be faster than ours, in words: printed under the table when
    #: it is (a faster alternative without a reason is printed as such)
    why: str = ""


@dataclass
class Comparison:
    """Methods doing the same work (``items`` items per call), the first one ours."""

    key: str  # the docs marker name
    title: str
    unit: str  # what one item is: "volume", "image", "sample"
    items: int
    methods: list[Method]
    note: str = ""


@dataclass
class Row:
    name: str
    times: list[float]
    agreement: Agreement | None

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)


@dataclass
class Result:
    comparison: Comparison
    rows: list[Row]
    repeats: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0))

    @property
    def agreed(self) -> bool:
        return all(r.agreement is None or r.agreement.ok for r in self.rows)


def run(cmp: Comparison, repeats: int) -> Result:
    """One warm-up call per method (imports, page cache; its output is the one checked), then
    ``repeats`` rounds of one timed call per method, in the same order every round."""
    load_before = os.getloadavg()
    outputs = [m.run() for m in cmp.methods]
    rows = [Row(m.name, [], m.check(outputs[0], out) if m.check else None)
            for m, out in zip(cmp.methods, outputs, strict=True)]
    del outputs
    for _ in range(repeats):
        _timed_round([m.run for m in cmp.methods], [r.times for r in rows])
    return Result(cmp, rows, repeats, load_before, os.getloadavg())


def _timed_round(calls: Sequence[Callable[[], Any]], times: Sequence[list[float]]) -> None:
    """One timed call of each, in order, its seconds appended to its list."""
    for call, spent in zip(calls, times, strict=True):
        gc.collect()  # a collection triggered by the previous method lands on nobody
        start = time.perf_counter()
        call()
        spent.append(time.perf_counter() - start)


def interleaved(methods: Mapping[str, Callable[[], object]], repeats: int
                ) -> dict[str, list[float]]:
    """Times of ``repeats`` rounds A, B, C, A, B, C, ... after one untimed warm-up round, for
    modules that check the outputs themselves (:func:`run` checks them for a Comparison)."""
    for call in methods.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        _timed_round(list(methods.values()), list(times.values()))
    return times


def timing_records(benchmark: str, size: str, times: Mapping[str, list[float]], ours: str,
                   checks: Mapping[str, str], digits: int = 4) -> list[dict]:
    """One record per method of an :func:`interleaved` timing: median and best (rounded to
    ``digits``), the ratio of its median to ours, and its ``checks`` text (empty if none)."""
    med = {m: statistics.median(t) for m, t in times.items()}
    return [{"benchmark": benchmark, "method": m, "size": size, "repeats": len(t),
             "median_s": round(med[m], digits), "best_s": round(min(t), digits),
             "median_vs_oncopipe": round(med[m] / med[ours], 2), "check": checks.get(m, "")}
            for m, t in times.items()]


def load_stamped(build: Callable[[], list[dict]]) -> list[dict]:
    """The records ``build()`` returns, each stamped with the machine and the 1-minute load
    average before and after all of them (what the tables' captions quote)."""
    before = os.getloadavg()[0]
    records = build()
    after = os.getloadavg()[0]
    for record in records:
        record.update(machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
                      load_before=round(before, 2), load_after=round(after, 2))
    return records


def _seconds(s: float) -> str:
    return f"{s:.3f}" if s >= 0.01 else f"{s * 1e3:.2f} ms"


def cell(value: object) -> str:
    """``value`` as text for a Markdown table cell: a ``|`` in it (``max |d HU|``) would end
    the cell, so it is escaped."""
    return str(value).replace("|", "\\|")


def table(result: Result) -> str:
    """The Markdown table of one comparison (median, best, throughput, ratio, agreement)."""
    cmp = result.comparison
    ours = result.rows[0].median
    lines = [f"| method | median s | best s | {cmp.unit}s/s | time / ours | output vs ours |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for row in result.rows:
        if row.agreement is None:
            verdict = "(reference)" if row is result.rows[0] else "-"
        else:
            verdict = ("agrees: " if row.agreement.ok else "DIFFERS: ") + row.agreement.text
        lines.append(f"| {cell(row.name)} | {_seconds(row.median)} | {_seconds(row.best)} "
                     f"| {cmp.items / row.median:,.1f} | {row.median / ours:.2f}x "
                     f"| {cell(verdict)} |")
    return "\n".join(lines)


def records_table(records: Sequence[dict]) -> str:
    """A Markdown table of plain records (comparisons run by another module, e.g. LIDC)."""
    if not records:
        return "(no rows)"
    keys = list(dict.fromkeys(k for r in records for k in r))
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else cell(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in records]
    return "\n".join(lines)


@dataclass(frozen=True)
class Column:
    """A column of :func:`grouped_tables`: its header, a ``str.format`` template over one
    record (``"{median_s:.3f}"``), and whether it holds numbers (right-aligned)."""

    header: str
    cell: str
    numeric: bool = True


def timing_columns(digits: int) -> list[Column]:
    """The columns of :func:`timing_records`, times shown with ``digits`` decimals."""
    return [Column("method", "{method}", False),
            Column("median (s)", f"{{median_s:.{digits}f}}"),
            Column("best (s)", f"{{best_s:.{digits}f}}"),
            Column("median / oncopipe", "{median_vs_oncopipe:.2f}x"),
            Column("check", "{check}", False)]


def grouped_tables(records: Sequence[dict], columns: Callable[[dict], Sequence[Column]],
                   size_in_caption: bool = False) -> str:
    """One Markdown table per ``benchmark`` of :func:`load_stamped` records, in order of first
    appearance, under a caption with the load average (and, with ``size_in_caption``, the first
    row's size: for modules whose rows of one benchmark share it); ``columns`` chooses a
    benchmark's columns from its first row."""
    out = []
    for bench in dict.fromkeys(r["benchmark"] for r in records):
        part = [r for r in records if r["benchmark"] == bench]
        first, cols = part[0], columns(part[0])
        size = f"{first['size']}; " if size_in_caption else ""
        out.append(f"**{bench}** ({size}load average {first['load_before']} before, "
                   f"{first['load_after']} after)\n")
        out.append("| " + " | ".join(c.header for c in cols) + " |\n"
                   "| " + " | ".join("---:" if c.numeric else "---" for c in cols) + " |")
        out += ["| " + " | ".join(cell(c.cell.format(**r)) for c in cols) + " |" for r in part]
        out.append("")
    return "\n".join(out)


def section(result: Result) -> str:
    """A comparison's generated block: what ran, under which load, then the table."""
    b, a = result.load_before, result.load_after
    head = (f"{result.comparison.title}. {result.comparison.items} {result.comparison.unit}(s) "
            f"per call; median and best of {result.repeats} interleaved rounds after a warm-up; "
            f"load average {b[0]:.2f} before, {a[0]:.2f} after.")
    blocks = [head, table(result)]
    if result.comparison.note:
        blocks.append(result.comparison.note)
    blocks += [f"Faster than ours here: {line}" for line in faster(result)]
    return "\n\n".join(blocks)


def faster(result: Result) -> list[str]:
    """One line per alternative whose median beat ours: its name, ratio and reason."""
    ours = result.rows[0].median
    methods = {m.name: m for m in result.comparison.methods}
    return [f"{row.name} ({row.median / ours:.2f}x): "
            f"{methods[row.name].why or 'no reason known.'}"
            for row in result.rows[1:]
            if row.agreement is not None and row.median < ours]


VERSIONED = ("numpy", "torch", "torchvision", "h5py", "pydicom", "SimpleITK", "nibabel", "isal",
             "opencv-python-headless", "pillow", "simplejpeg", "PyTurboJPEG", "scipy", "monai",
             "torchio", "dvc")


def environment() -> str:
    """Machine and library versions, for the header of the generated docs."""
    versions = []
    for name in VERSIONED:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return (f"{platform.machine()}, {os.cpu_count()} CPU(s) visible, Python "
            f"{platform.python_version()}; " + ", ".join(versions) + ".")


def markers(key: str) -> tuple[str, str]:
    return f"<!-- bench:{key} start -->", f"<!-- bench:{key} end -->"


def write_block(doc: Path, key: str, text: str) -> None:
    """Replace what lies between the ``key`` markers of ``doc`` (atomically: beside, rename)."""
    start, end = markers(key)
    body = doc.read_text()
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(body):
        raise SystemExit(f"{doc}: no '{start}' ... '{end}' markers for comparison {key!r}")
    body = pattern.sub(lambda _: f"{start}\n{text.strip()}\n{end}", body, count=1)
    tmp = doc.with_name(f".{doc.name}.tmp")
    tmp.write_text(body)
    os.replace(tmp, doc)
