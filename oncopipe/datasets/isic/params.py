"""The ``isic`` section of ``params.yaml``: tasks, class names, demo and prepare settings.

Kept free of processing code so that loading params imports nothing of the readers.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from oncopipe.core.contract import PredictInput, Provenance
from oncopipe.core.settings import SETTINGS, Bool, Float, Int, NonNegInt, Str

CLASS_NAMES: dict[str, tuple[str, ...]] = {"binary": ("benign", "malignant")}

CLASS_DESCRIPTIONS: dict[str, str] = {
    "benign": "The skin lesion in the photograph was benign (a naevus or another non-cancerous "
              "lesion), by histopathology or follow-up.",
    "malignant": "The skin lesion in the photograph was a melanoma, confirmed by histopathology.",
}

PREDICT_INPUT = PredictInput(
    kind="image", suffixes=(".jpg", ".jpeg"), formats=("JPEG",),
    expected="a JPEG photograph as in jpeg/train/",
    min_side=256)  # the release's smallest photographs are 480 x 640


@dataclass(frozen=True, config=SETTINGS)
class DemoParams:
    seed: Int = 0
    n_patients: Annotated[Int, Field(ge=2)] = 60
    images_per_patient: tuple[Int, Int] = (2, 14)  # inclusive range
    # the real set is 1.8%; raised so the demo is learnable
    malignant_fraction: Annotated[Float, Field(gt=0, lt=1)] = 0.15
    n_test: NonNegInt = 20
    large_images: NonNegInt = 3  # photographs thousands of pixels a side
    duplicates: NonNegInt = 2  # pairs in the duplicates list
    quality: Annotated[Int, Field(ge=1, le=100)] = 90  # JPEG quality

    def __post_init__(self) -> None:
        low, high = self.images_per_patient
        if not 1 <= low <= high:
            raise ValueError("images_per_patient must be [min, max] with 1 <= min <= max")
        if self.duplicates >= self.n_patients:
            raise ValueError("duplicates must be in [0, n_patients)")


@dataclass(frozen=True, config=SETTINGS)
class PrepareParams:
    size: Annotated[Int, Field(ge=8, le=4096)] = 500  # output side in pixels (the reference: 500)
    fit: Literal["resize", "center_crop"] = "resize"
    reduced_decode: Bool = True  # decode JPEGs at 1/2, 1/4 or 1/8 scale where size allows
    image_dir: Str = "jpeg/train"  # relative to raw; the Kaggle train/ folder holds DICOMs
    test_dir: Str = "jpeg/test"  # unlabelled; counted in the report, not used
    duplicates: Str = "ISIC_2020_Training_Duplicates.csv"  # honoured when present; "" = off
    # decoding processes; 0: one per core (up to 8). Outputs do not depend on it.
    workers: NonNegInt = 0


# The release as its provider states it (docs/data.md), for the data card.
PROVENANCE = Provenance(
    release="SIIM-ISIC Melanoma Classification 2020",
    page="https://www.kaggle.com/c/siim-isic-melanoma-classification",
    licence=("Creative Commons Attribution-NonCommercial 4.0 (CC BY-NC 4.0) when we last "
             "read it; see the provider's page"),
    citation=(
        "Rotemberg V, Kurtansky N, Betz-Stablein B, et al. A patient-centric dataset of "
        "images and metadata for identifying melanomas using clinical context. Scientific "
        "Data 8: 34, 2021"
    ),
    not_for=(
        "commercial use (the licence is non-commercial)",
        "a diagnosis of melanoma: the labels are the release's, for research",
    ),
)
