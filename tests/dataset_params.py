"""Shared set-up of the image-dataset tests: a config through the stages' loader, file digests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from oncopipe import config


def load_cfg(tmp: Path, name: str, section: dict) -> config.DatasetConfig:
    """``section`` as ``params.yaml``'s ``<name>`` section, validated by :func:`config.load`."""
    path = tmp / f"params-{len(list(tmp.glob('params-*')))}.yaml"
    path.write_text(yaml.safe_dump({"seed": 1, "datasets": [name], name: section}))
    return config.load(name, path)


def digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, by relative path."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
