"""A toy mammography dataset, ``ddsm``: 32 x 32 PNG crops filed under ``benign/`` and
``malignant/``, named ``<patient>_<k>.png``. tests/test_sixth_dataset.py adds it to a copy of
the project by following docs/architecture.md's "Adding a sixth dataset"."""

from oncopipe.core.contract import DatasetSpec, Lazy
from oncopipe.datasets.ddsm import params

SPEC = DatasetSpec(
    name="ddsm",
    class_names=params.CLASS_NAMES,
    class_descriptions=params.CLASS_DESCRIPTIONS,
    predict_input=params.PREDICT_INPUT,
    demo_params=params.DemoParams,
    prepare_params=params.PrepareParams,
    write_demo=Lazy(f"{__name__}.demo", "write_demo"),
    prepare=Lazy(f"{__name__}.prepare", "prepare"),
    preprocess_one=Lazy(f"{__name__}.prepare", "preprocess_one"),
)
