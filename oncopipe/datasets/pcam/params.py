"""The ``pcam`` section of ``params.yaml``: tasks, class names, demo and prepare settings.

Kept free of processing code so that loading params imports nothing of the readers.
"""

from __future__ import annotations

from dataclasses import dataclass

from oncopipe.contract import PredictInput

CLASS_NAMES: dict[str, tuple[str, ...]] = {"binary": ("negative", "positive")}

PREDICT_INPUT = PredictInput(
    kind="image", suffixes=(".tif", ".tiff"), formats=("TIFF",),
    expected="a 96x96 TIFF patch as in train/")


@dataclass(frozen=True)
class DemoParams:
    seed: int = 0
    n_train: int = 1000
    n_test: int = 40
    positive_fraction: float = 0.4  # the real train set is 40.5% positive
    border_tumour_fraction: float = 0.35  # share of negatives with tumour in the border only

    def check(self) -> None:
        if self.n_train < 10 or self.n_test < 0:
            raise ValueError("n_train must be >= 10 and n_test >= 0")
        for name in ("positive_fraction", "border_tumour_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]")


@dataclass(frozen=True)
class PrepareParams:
    workers: int = 0  # decoding processes; 0: one per core (up to 8). Outputs do not depend on it.

    def check(self) -> None:
        if self.workers < 0:
            raise ValueError("workers must be >= 0")
