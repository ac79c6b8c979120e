"""The ``pcam`` section of ``params.yaml``: tasks, class names, demo and prepare settings.

Kept free of processing code so that loading params imports nothing of the readers.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic.dataclasses import dataclass

from oncopipe.contract import PredictInput
from oncopipe.settings import SETTINGS, Float, Int, NonNegInt

CLASS_NAMES: dict[str, tuple[str, ...]] = {"binary": ("negative", "positive")}

PREDICT_INPUT = PredictInput(
    kind="image", suffixes=(".tif", ".tiff"), formats=("TIFF",),
    expected="a 96x96 TIFF patch as in train/")

Fraction = Annotated[Float, Field(ge=0, le=1)]


@dataclass(frozen=True, config=SETTINGS)
class DemoParams:
    seed: Int = 0
    n_train: Annotated[Int, Field(ge=10)] = 1000
    n_test: NonNegInt = 40
    positive_fraction: Fraction = 0.4  # the real train set is 40.5% positive
    border_tumour_fraction: Fraction = 0.35  # share of negatives with tumour in the border only


@dataclass(frozen=True, config=SETTINGS)
class PrepareParams:
    # decoding processes; 0: one per core (up to 8). Outputs do not depend on it.
    workers: NonNegInt = 0
