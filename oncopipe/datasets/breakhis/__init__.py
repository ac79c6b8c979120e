"""BreakHis v1 (breast cancer histopathology, 7,909 PNGs of 82 patients at 4 magnifications).

Tasks: ``binary`` (benign, malignant) and ``subtype`` (the eight histological subtypes).
The split unit is the slide id from the patient folder (``SOB_B_A_14-22549AB`` ->
``14-22549AB``); slide ``14-13412``, filed under both ductal and lobular carcinoma, is one
patient. See docs/breakhis.md for the layout, the quirks and the reference models.
"""

from oncopipe.contract import DatasetSpec, Lazy
from oncopipe.datasets.breakhis import params

SPEC = DatasetSpec(
    name="breakhis",
    class_names=params.CLASS_NAMES,
    predict_input=params.PREDICT_INPUT,
    demo_params=params.DemoParams,
    prepare_params=params.PrepareParams,
    provenance=params.PROVENANCE,
    write_demo=Lazy(f"{__name__}.demo", "write_demo"),
    prepare=Lazy(f"{__name__}.prepare", "prepare"),
    preprocess_one=Lazy(f"{__name__}.prepare", "preprocess_one"),
)
