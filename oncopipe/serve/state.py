"""The app's settings and what stays loaded between requests: models and configs.

Models load on first use (lazily) and stay loaded; each request compares the modification
times of ``config.json`` and ``model.pt``, so a model the train stage rewrites is reloaded on
the next request, and likewise the configs when ``params.yaml`` changes. The input limits
are its ``limits:`` section (:mod:`oncopipe.core.limits`), made the process's on every (re)load.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from oncopipe import datasets, predict
from oncopipe.core import config, limits
from oncopipe.learn.inference import CONFIG_FILE, MODEL_FILE

log = logging.getLogger("oncopipe.serve")
MIB = 1 << 20


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Settings:
    """Where the project lies, the upload limit and the host names answered; the command
    line sets them (what an upload may unpack to is ``params.yaml``'s ``limits:``)."""

    root: Path = Path(".")  # the project: params.yaml, models/, data/, metrics/
    params: Path | None = None  # default root/params.yaml
    models: Path | None = None  # default root/models
    max_upload: int = 512 * MIB  # bytes in one upload (413 beyond)
    hosts: tuple[str, ...] = ()  # names answered besides LOOPBACK_HOSTS (the --host bound)

    @property
    def allowed_hosts(self) -> frozenset[str]:
        """``Host`` names (without port or brackets, lower case) the app answers; any other
        is refused, so a hostile site's DNS name rebound to this machine gets nothing."""
        names = {h.strip().strip("[]").lower() for h in self.hosts}
        return frozenset({*LOOPBACK_HOSTS, *names} - {"", "0.0.0.0", "::"})

    @property
    def params_file(self) -> Path:
        return self.params or self.root / config.PARAMS_FILE

    @property
    def models_dir(self) -> Path:
        return self.models or self.root / "models"


class NoModel(LookupError):
    """No trained model for the dataset yet."""


class Misconfigured(RuntimeError):
    """The project itself is unusable (params.yaml missing or invalid): the server's fault."""


@dataclass
class Cache:
    """Loaded models (one per dataset, reloaded when the train stage rewrites them) and
    configs (reloaded when params.yaml changes)."""

    settings: Settings
    lock: threading.Lock = field(default_factory=threading.Lock)
    models: dict = field(default_factory=dict)
    configs: dict = field(default_factory=dict)

    def model(self, dataset: str) -> tuple[predict.Predictor, str | None]:
        folder = self.settings.models_dir / dataset
        files = [folder / CONFIG_FILE, folder / MODEL_FILE]
        if not all(f.is_file() for f in files):
            raise NoModel(f"no model trained yet for {dataset} ({folder} is empty; run "
                          f"`dvc repro train@{dataset}`)")
        stamp = tuple(f.stat().st_mtime_ns for f in files)
        with self.lock:
            hit = self.models.get(dataset)
            if hit is None or hit[0] != stamp:
                started = time.perf_counter()
                hit = (stamp, predict.Predictor(folder), None)
                self.models[dataset] = hit
                log.info("loaded the %s model from %s in %.2f s", dataset, folder,
                         time.perf_counter() - started)
            return hit[1], hit[2]

    def remember_layer(self, dataset: str, layer: str) -> None:
        with self.lock:
            stamp, predictor, _ = self.models[dataset]
            self.models[dataset] = (stamp, predictor, layer)

    def config(self, dataset: str) -> config.DatasetConfig:
        path = self.settings.params_file
        stamp = path.stat().st_mtime_ns if path.is_file() else None
        with self.lock:
            hit = self.configs.get(dataset)
            if hit is None or hit[0] != stamp:
                try:
                    hit = (stamp, datasets.load_config(dataset, path))
                except (OSError, ValueError) as exc:
                    raise Misconfigured(f"{path}: {exc}") from None
                self.configs[dataset] = hit
                limits.activate(hit[1].limits)
            return hit[1]
