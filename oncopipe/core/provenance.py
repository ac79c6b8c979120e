"""Where a result came from: the raw data (the demo generator or a real folder, with a
fingerprint of the manifest prepared from it), the train profile and the code version.

Recorded in the shard summary, the model card and metrics.json, so that a figure says
whether it measures a method on real data or only that the pipeline runs on synthetic data
(``oncopipe gate`` refuses to hold demo data to the ``reference`` floors).

The code version is the package version only: a hash of the working tree would make the
committed outputs differ between a clean clone and a worktree. The code each stage ran is
pinned by ``dvc.lock``, which records the md5 of every file a stage imports.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import oncopipe

DEMO_ROOT = Path("data/demo")  # where the demo stage writes each dataset's raw data


def raw_source(dataset: str, raw: Path, manifest: Path) -> dict:
    """``{"source": "demo" | "real", "path", "manifest_sha256"}`` of ``dataset``'s raw data."""
    demo = Path(raw).parts[-3:] == (*DEMO_ROOT.parts, dataset)  # relative or absolute
    return {"source": "demo" if demo else "real", "path": str(raw),
            "manifest_sha256": file_sha256(manifest)}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def code_version() -> dict:
    """The package version, and where the exact code of each stage is recorded."""
    return {"version": oncopipe.__version__,
            "files": "dvc.lock (md5 of every file each stage imports)"}
