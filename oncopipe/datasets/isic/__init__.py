"""SIIM-ISIC Melanoma Classification 2020 (Kaggle): dermoscopy photographs, benign or
malignant, several per patient. See docs/image-datasets.md."""

from oncopipe.contract import DatasetSpec, Lazy
from oncopipe.datasets.isic import params

SPEC = DatasetSpec(
    name="isic",
    class_names=params.CLASS_NAMES,
    predict_input=params.PREDICT_INPUT,
    demo_params=params.DemoParams,
    prepare_params=params.PrepareParams,
    provenance=params.PROVENANCE,
    write_demo=Lazy(f"{__name__}.demo", "write_demo"),
    prepare=Lazy(f"{__name__}.prepare", "prepare"),
    preprocess_one=Lazy(f"{__name__}.prepare", "preprocess_one"),
)
