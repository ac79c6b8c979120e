"""Account for every raw item a stage reads: kept, or rejected with a reason.

A stage creates one :class:`Report`, calls :meth:`Report.read` / :meth:`Report.keep` /
:meth:`Report.reject` as it goes, and :meth:`Report.write` at the end, which writes
``rejects.parquet`` (``path``, ``reason``, ``stage``) and ``report.json`` (counts, by reason)
atomically and logs a one-line summary. Nothing is dropped without a row.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from oncopipe.atomic import atomic_path, write_text

log = logging.getLogger(__name__)


class Report:
    def __init__(self, stage: str):
        self.stage = stage
        self.n_read = 0
        self.n_kept = 0
        self.rejects: list[tuple[str, str]] = []
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

    def wrote(self, path: str | Path) -> None:
        self.written.append(str(path))

    def summary(self) -> dict:
        by_reason = Counter(reason.split(":")[0] for _, reason in self.rejects)
        return {
            "stage": self.stage,
            "read": self.n_read,
            "kept": self.n_kept,
            "rejected": len(self.rejects),
            "rejected_by_reason": dict(sorted(by_reason.items())),
            "written": sorted(self.written),
            **self.extra,
        }

    def write(self, out_dir: str | Path, prefix: str = "") -> dict:
        """Write ``<prefix>rejects.parquet`` and ``<prefix>report.json`` into ``out_dir``."""
        out_dir = Path(out_dir)
        rejects = pl.DataFrame(
            {
                "path": [p for p, _ in self.rejects],
                "reason": [r for _, r in self.rejects],
                "stage": [self.stage] * len(self.rejects),
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
