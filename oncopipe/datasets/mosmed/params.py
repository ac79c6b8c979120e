"""The ``mosmed`` section of ``params.yaml``: tasks, class names, demo and prepare settings.

Kept free of processing code so that loading params (every stage does) imports nothing of
the volume reader or the demo generator.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from oncopipe.core.contract import PredictInput, Provenance
from oncopipe.core.settings import SETTINGS, Float, Int, NonNegFloat, NonNegInt, Str

CLASS_NAMES: dict[str, tuple[str, ...]] = {"binary": ("normal", "abnormal")}

CLASS_DESCRIPTIONS: dict[str, str] = {
    "normal": "Chest CT without signs of viral pneumonia (MosMed category CT-0).",
    "abnormal": "Chest CT with lung changes of COVID-19 pneumonia, of any extent (MosMed "
                "categories CT-1 to CT-4, from under 25% to over 75% of the lung involved).",
}

PREDICT_INPUT = PredictInput(
    kind="volume", suffixes=(".nii", ".nii.gz"), formats=("NIfTI",),
    expected="a NIfTI CT study (.nii or .nii.gz) as in studies/")
CATEGORIES: tuple[str, ...] = ("CT-0", "CT-1", "CT-2", "CT-3", "CT-4", "CT-23")

# first id and number of studies of each category in the real release
ID_RANGES: dict[str, tuple[int, int]] = {
    "CT-0": (1, 254), "CT-1": (255, 684), "CT-2": (939, 125), "CT-3": (1064, 45),
    "CT-4": (1109, 2),
}
Side = Annotated[Int, Field(ge=2)]  # a prepared volume is at least 2 voxels along every axis


@dataclass(frozen=True, config=SETTINGS)
class DemoParams:
    seed: Int = 0
    studies: tuple[Int, Int, Int, Int, Int] = (24, 14, 8, 4, 2)  # per CT-0 ... CT-4
    masks: Int = 4  # the first this many CT-1 studies get a mask file
    size: Annotated[Int, Field(ge=16)] = 128  # in-plane voxels (the release has 512)
    slices: tuple[Int, Int] = (36, 44)  # min, max number of slices
    noise_hu: NonNegFloat = 15.0  # standard deviation of the image noise

    def __post_init__(self) -> None:
        for (name, (_, available)), n in zip(ID_RANGES.items(), self.studies, strict=True):
            if not 0 <= n <= available:
                raise ValueError(f"studies: {n} for {name} is outside 0..{available}")
        if not 0 <= self.masks <= self.studies[1]:
            raise ValueError("masks must be between 0 and the number of CT-1 studies")
        if not 2 <= self.slices[0] <= self.slices[1]:
            raise ValueError("slices must be [min, max] with 2 <= min <= max")


@dataclass(frozen=True, config=SETTINGS)
class PrepareParams:
    # depth, height, width of the prepared volume
    shape: tuple[Side, Side, Side] = (64, 128, 128)
    window: tuple[Float, Float] = (-1000.0, 400.0)  # HU clipped to this range, then to [0, 1]
    normal: tuple[Str, ...] = ("CT-0",)
    abnormal: tuple[Str, ...] = ("CT-1", "CT-2", "CT-3", "CT-4", "CT-23")
    dtype: Literal["float16", "float32", "uint8"] = "float16"  # uint8: x / 255
    workers: NonNegInt = 0  # 0: one per CPU core (at most 8)

    def __post_init__(self) -> None:
        if not self.window[0] < self.window[1]:
            raise ValueError(f"window must be [low, high] with low < high, got {self.window}")
        for key in ("normal", "abnormal"):
            unknown = sorted(set(getattr(self, key)) - set(CATEGORIES))
            if unknown:
                raise ValueError(f"{key}: unknown category {unknown[0]!r} "
                                 f"(known: {', '.join(CATEGORIES)})")
        if not self.normal or not self.abnormal:
            raise ValueError("normal and abnormal must each list at least one category")
        both = sorted(set(self.normal) & set(self.abnormal))
        if both:
            raise ValueError(f"category {both[0]} is listed as both normal and abnormal")

    def label(self, category: str) -> int | None:
        if category in self.normal:
            return 0
        if category in self.abnormal:
            return 1
        return None

# The release as its provider states it (docs/data.md), for the data card.
PROVENANCE = Provenance(
    release="MosMedData COVID19_1110",
    page="https://mosmed.ai/datasets/covid19_1110/",
    licence="see the provider's page",
    citation=(
        "Morozov SP, Andreychenko AE, Pavlov NA, Vladzymyrskyy AV, Ledikhova NV, "
        "Gombolevskiy VA, Blokhin IA, Gelezhe PB, Gonchar AV, Chernina VY. MosMedData: "
        "chest CT scans with COVID-19 related findings dataset. arXiv:2005.06465, 2020"
    ),
    not_for=(
        "a diagnosis of COVID-19: the categories grade CT findings, not a laboratory test",
        "other lung diseases: the release has no other findings",
    ),
)
