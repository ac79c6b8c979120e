"""The ``pcam`` section of ``params.yaml``: tasks, class names, demo and prepare settings.

Kept free of processing code so that loading params imports nothing of the readers.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic.dataclasses import dataclass

from oncopipe.core.contract import PredictInput, Provenance
from oncopipe.core.settings import SETTINGS, Float, Int, NonNegInt

CLASS_NAMES: dict[str, tuple[str, ...]] = {"binary": ("negative", "positive")}

CLASS_DESCRIPTIONS: dict[str, str] = {
    "negative": "No metastatic tumour tissue in the centre 32 x 32 pixel region of this lymph-node "
                "patch (tumour elsewhere in the patch does not count).",
    "positive": "Metastatic tumour tissue (breast cancer spread to the lymph node) in at least one "
                "pixel of the centre 32 x 32 pixel region of the patch.",
}

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


# The release as its provider states it (docs/data.md), for the data card.
PROVENANCE = Provenance(
    release="PCam, Kaggle histopathologic-cancer-detection",
    page="https://www.kaggle.com/c/histopathologic-cancer-detection",
    licence=("the Kaggle competition's rules govern the Kaggle download; PCam's repository "
             "states its own licence (CC0 when we last read it; see the provider's page)"),
    citation=(
        "Veeling BS, Linmans J, Winkens J, Cohen T, Welling M. Rotation equivariant CNNs "
        "for digital pathology. MICCAI 2018; Ehteshami Bejnordi B, Veta M, Johannes van "
        "Diest P, et al. Diagnostic assessment of deep learning algorithms for detection "
        "of lymph node metastases in women with breast cancer. JAMA 318(22): 2199-2210, "
        "2017"
    ),
    not_for=(
        "a diagnosis of metastasis on a whole slide: the labels are of 96 x 96 patches",
        "patient-level claims: the Kaggle release has no patient ids, so a patient may "
        "cross splits",
    ),
)
