"""Account for every raw item a stage reads: kept, or rejected with a reason.

A stage creates one :class:`Report`, calls :meth:`Report.read` / :meth:`Report.keep` /
:meth:`Report.reject` as it goes, and :meth:`Report.write` at the end, which writes
``rejects.parquet`` (``path``, ``reason``, ``stage``) and ``report.json`` (counts, by reason)
atomically and logs a one-line summary. Nothing is dropped without a row.

``read``, ``kept`` and ``rejected`` count raw items, so ``kept + rejected == read``. A part of a
kept item that is set aside (one reader's mark in an annotation file that is used) goes
through :meth:`Report.reject_part`: a row in ``rejects.parquet`` like any other, counted
apart as ``parts_rejected``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from oncopipe.core.atomic import atomic_path, write_text

log = logging.getLogger(__name__)


class Report:
    def __init__(self, stage: str):
        self.stage = stage
        self.n_read = 0
        self.n_kept = 0
        self.rejects: list[tuple[str, str]] = []
        self.part_rejects: list[tuple[str, str]] = []
        self.written: list[str] = []
        self.extra: dict = {}

    def read(self, n: int = 1) -> None:
        self.n_read += n

    def keep(self, n: int = 1) -> None:
        self.n_kept += n

    def reject(self, path: str | Path, reason: str) -> None:
        log.warning("rejected %s: %s", path, reason)
        self.rejects.append((str(path), reason))

    def check_accounting(self) -> None:
        """Every item read was kept or rejected exactly once; anything else is a bug in the
        stage (an item lost or counted twice), so it stops the stage before it writes."""
        if self.n_kept + len(self.rejects) != self.n_read:
            raise AssertionError(f"{self.stage}: read {self.n_read} items but kept "
                                 f"{self.n_kept} and rejected {len(self.rejects)}")

    def reject_part(self, path: str | Path, reason: str) -> None:
        """Record a part of a kept item as set aside (not a raw item: not in read/kept)."""
        log.warning("set aside %s: %s", path, reason)
        self.part_rejects.append((str(path), reason))

    def wrote(self, path: str | Path) -> None:
        self.written.append(str(path))

    def summary(self) -> dict:
        by_reason = Counter(reason.split(":")[0] for _, reason in self.rejects)
        parts = {}
        if self.part_rejects:
            by_part = Counter(reason.split(":")[0] for _, reason in self.part_rejects)
            parts = {"parts_rejected": len(self.part_rejects),
                     "parts_rejected_by_reason": dict(sorted(by_part.items()))}
        return {
            "stage": self.stage,
            "read": self.n_read,
            "kept": self.n_kept,
            "rejected": len(self.rejects),
            "rejected_by_reason": dict(sorted(by_reason.items())),
            **parts,
            "written": sorted(self.written),
            **self.extra,
        }

    def write(self, out_dir: str | Path, prefix: str = "") -> dict:
        """Write ``<prefix>rejects.parquet`` and ``<prefix>report.json`` into ``out_dir``."""
        out_dir = Path(out_dir)
        rows = self.rejects + self.part_rejects
        rejects = pl.DataFrame(
            {
                "path": [p for p, _ in rows],
                "reason": [r for _, r in rows],
                "stage": [self.stage] * len(rows),
            },
            schema={"path": pl.String, "reason": pl.String, "stage": pl.String},
        ).sort(["path", "reason"])
        with atomic_path(out_dir / f"{prefix}rejects.parquet") as tmp:
            pq.write_table(rejects.to_arrow(), tmp, compression="zstd")
        summary = self.summary()
        write_text(out_dir / f"{prefix}report.json", json.dumps(summary, indent=2) + "\n")
        log.info(
            "%s: read %d, kept %d, rejected %d %s; wrote %d file(s) to %s",
            self.stage, self.n_read, self.n_kept, len(self.rejects),
            summary["rejected_by_reason"] or "", len(self.written), out_dir,
        )
        return summary
