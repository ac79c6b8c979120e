"""PCam as published on Kaggle (histopathologic-cancer-detection): 96 x 96 H&E lymph-node
patches, label 1 when tumour reaches the centre 32 x 32 pixels. See docs/image-datasets.md."""

from oncopipe.contract import DatasetSpec, Lazy
from oncopipe.datasets.pcam import params

SPEC = DatasetSpec(
    name="pcam",
    class_names=params.CLASS_NAMES,
    predict_input=params.PREDICT_INPUT,
    demo_params=params.DemoParams,
    prepare_params=params.PrepareParams,
    provenance=params.PROVENANCE,
    write_demo=Lazy(f"{__name__}.demo", "write_demo"),
    prepare=Lazy(f"{__name__}.prepare", "prepare"),
    preprocess_one=Lazy(f"{__name__}.prepare", "preprocess_one"),
)
