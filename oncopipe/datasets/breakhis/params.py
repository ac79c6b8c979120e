"""The ``breakhis`` section of ``params.yaml``: tasks, class names, demo and prepare settings.

Kept free of processing code so that loading params imports nothing of the decoders.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from oncopipe.core.contract import PredictInput, Provenance
from oncopipe.core.settings import SETTINGS, Int, NonNegInt

# subtype folders, benign first, in the paper's order (naming.py maps the file-name codes)
SUBTYPES: tuple[str, ...] = (
    "adenosis", "fibroadenoma", "phyllodes_tumor", "tubular_adenoma",
    "ductal_carcinoma", "lobular_carcinoma", "mucinous_carcinoma", "papillary_carcinoma",
)
Magnification = Literal["40X", "100X", "200X", "400X"]
MAGNIFICATIONS: tuple[Magnification, ...] = ("40X", "100X", "200X", "400X")
PatientUnit = Literal["slide", "slide_number"]
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "binary": ("benign", "malignant"),
    "subtype": SUBTYPES,
}

CLASS_DESCRIPTIONS: dict[str, str] = {
    "benign": "The breast tissue in this microscope image comes from a benign tumour.",
    "malignant": "The breast tissue in this microscope image comes from a breast cancer.",
    "adenosis": "Benign: enlarged breast lobules with more glands than usual.",
    "fibroadenoma": "Benign: a common, firm tumour of glandular and connective tissue.",
    "phyllodes_tumor": "Benign here: a leaf-like tumour of the breast's connective tissue.",
    "tubular_adenoma": "Benign: a tumour of tightly packed small tubules.",
    "ductal_carcinoma": "Malignant: cancer that started in the milk ducts (the commonest kind).",
    "lobular_carcinoma": "Malignant: cancer that started in the milk-producing lobules.",
    "mucinous_carcinoma": "Malignant: cancer cells floating in pools of mucus.",
    "papillary_carcinoma": "Malignant: cancer growing in finger-like projections.",
}

PREDICT_INPUT = PredictInput(
    kind="image", suffixes=(".png",), formats=("PNG",),
    expected="a PNG field of view as in BreaKHis_v1")


@dataclass(frozen=True, config=SETTINGS)
class DemoParams:
    """Size of the synthetic tree (``breakhis.demo``)."""

    seed: Int = 0
    # folders per subtype; the quirk folders count towards it and need two
    patients_per_subtype: Annotated[Int, Field(ge=2)] = 3
    images_per_magnification: tuple[Int, Int] = (1, 3)  # per patient, drawn in [min, max]
    layout: Literal["original", "kaggle"] = "original"  # kaggle: extra BreaKHis_v1/ + Folds.csv

    def __post_init__(self) -> None:
        lo, hi = self.images_per_magnification
        if not 1 <= lo <= hi:
            raise ValueError("images_per_magnification must be [min, max] with 1 <= min <= max")


@dataclass(frozen=True, config=SETTINGS)
class PrepareParams:
    """How the PNGs become arrays (``breakhis.prepare``)."""

    image_size: Annotated[Int, Field(ge=8)] = 299  # square side: 299 Inception-v3, 224 VGG-16
    # which magnification folders to keep
    magnifications: Annotated[tuple[Magnification, ...], Field(min_length=1)] = MAGNIFICATIONS
    fit: Literal["resize", "center_crop"] = "resize"  # whole field squashed, or central square
    patient_unit: PatientUnit = "slide"  # slide: 14-22549AB; slide_number: 14-22549
    workers: NonNegInt = 0  # decoding processes; 0 = one per CPU core (at most 8)


# The release as its provider states it (docs/data.md), for the data card.
PROVENANCE = Provenance(
    release="BreakHis v1",
    page="https://web.inf.ufpr.br/vri/databases/breast-cancer-histopathological-database-breakhis/",
    licence="see the provider's page for the terms of use",
    citation=(
        "Spanhol FA, Oliveira LS, Petitjean C, Heutte L. A dataset for breast cancer "
        "histopathological image classification. IEEE Transactions on Biomedical "
        "Engineering 63(7): 1455-1462, 2016"
    ),
    not_for=(
        "a diagnosis of breast cancer: 82 patients from one laboratory",
        "image-level splits: images of one patient are correlated",
    ),
)
