"""The ``isic`` section of ``params.yaml``: tasks, class names, demo and prepare settings.

Kept free of processing code so that loading params imports nothing of the readers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from oncopipe.contract import PredictInput, Provenance

CLASS_NAMES: dict[str, tuple[str, ...]] = {"binary": ("benign", "malignant")}

PREDICT_INPUT = PredictInput(
    kind="image", suffixes=(".jpg", ".jpeg"), formats=("JPEG",),
    expected="a JPEG photograph as in jpeg/train/",
    min_side=256)  # the release's smallest photographs are 480 x 640


@dataclass(frozen=True)
class DemoParams:
    seed: int = 0
    n_patients: int = 60
    images_per_patient: tuple[int, int] = (2, 14)  # inclusive range
    malignant_fraction: float = 0.15  # the real set is 1.8%; raised so the demo is learnable
    n_test: int = 20
    large_images: int = 3  # photographs thousands of pixels a side
    duplicates: int = 2  # pairs in the duplicates list
    quality: int = 90  # JPEG quality

    def check(self) -> None:
        low, high = self.images_per_patient
        if not 1 <= low <= high:
            raise ValueError("images_per_patient must be [min, max] with 1 <= min <= max")
        if self.n_patients < 2 or self.n_test < 0 or self.large_images < 0:
            raise ValueError("n_patients must be >= 2, n_test and large_images >= 0")
        if not 0 < self.malignant_fraction < 1:
            raise ValueError("malignant_fraction must be in (0, 1)")
        if not 0 <= self.duplicates < self.n_patients:
            raise ValueError("duplicates must be in [0, n_patients)")
        if not 1 <= self.quality <= 100:
            raise ValueError("quality must be in [1, 100]")


@dataclass(frozen=True)
class PrepareParams:
    size: int = 500  # output side in pixels (the reference used 500)
    fit: Literal["resize", "center_crop"] = "resize"
    reduced_decode: bool = True  # decode JPEGs at 1/2, 1/4 or 1/8 scale where size allows
    image_dir: str = "jpeg/train"  # relative to raw; the Kaggle train/ folder holds DICOMs
    test_dir: str = "jpeg/test"  # unlabelled; counted in the report, not used
    duplicates: str = "ISIC_2020_Training_Duplicates.csv"  # honoured when present; "" = off
    workers: int = 0  # decoding processes; 0: one per core (up to 8). Outputs do not depend on it.

    def check(self) -> None:
        if not 8 <= self.size <= 4096:
            raise ValueError("size must be in [8, 4096]")
        if self.workers < 0:
            raise ValueError("workers must be >= 0")

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
