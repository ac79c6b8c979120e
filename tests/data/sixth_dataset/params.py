"""The ``ddsm`` section of ``params.yaml``: classes, what one prediction takes, demo and prepare
settings. Free of processing code: every stage imports it."""

from __future__ import annotations

from dataclasses import dataclass

from oncopipe.contract import PredictInput

CLASS_NAMES: dict[str, tuple[str, ...]] = {"binary": ("benign", "malignant")}
SIDE = 32  # pixels of a crop

PREDICT_INPUT = PredictInput(
    kind="image", suffixes=(".png",), formats=("PNG",),
    expected=f"a {SIDE}x{SIDE} PNG crop as in benign/ and malignant/")


@dataclass(frozen=True)
class DemoParams:
    seed: int = 0
    n_patients: int = 12
    images_per_patient: int = 4

    def check(self) -> None:
        if self.n_patients < 4 or self.images_per_patient < 1:
            raise ValueError("n_patients must be >= 4 and images_per_patient >= 1")


@dataclass(frozen=True)
class PrepareParams:
    workers: int = 1  # decoding processes; 0: one per core. Outputs do not depend on it.

    def check(self) -> None:
        if self.workers < 0:
            raise ValueError("workers must be >= 0")
