"""The ``ddsm`` section of ``params.yaml``: classes, what one prediction takes, demo and prepare
settings. Free of processing code: every stage imports it."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic.dataclasses import dataclass

from oncopipe.core.contract import PredictInput
from oncopipe.core.settings import SETTINGS, Int, NonNegInt, PosInt

CLASS_NAMES: dict[str, tuple[str, ...]] = {"binary": ("benign", "malignant")}
CLASS_DESCRIPTIONS: dict[str, str] = {
    "benign": "The mammogram crop shows a lesion that proved benign.",
    "malignant": "The mammogram crop shows a lesion that proved to be breast cancer.",
}
SIDE = 32  # pixels of a crop

PREDICT_INPUT = PredictInput(
    kind="image", suffixes=(".png",), formats=("PNG",),
    expected=f"a {SIDE}x{SIDE} PNG crop as in benign/ and malignant/")


@dataclass(frozen=True, config=SETTINGS)
class DemoParams:
    seed: Int = 0
    n_patients: Annotated[Int, Field(ge=4)] = 12
    images_per_patient: PosInt = 4


@dataclass(frozen=True, config=SETTINGS)
class PrepareParams:
    workers: NonNegInt = 1  # decoding processes; 0: one per core. Outputs do not depend on it.
