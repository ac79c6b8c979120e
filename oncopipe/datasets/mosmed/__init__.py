"""MosMedData (COVID19_1110): chest CT in NIfTI -> HU-windowed 64 x 128 x 128 volumes.

See docs/mosmed.md. Modules: :mod:`.registry` (which studies exist, their categories),
:mod:`.volume` (read, reorient from the affine, window, resample), :mod:`.prepare` (the
prepare step), :mod:`.demo` (synthetic data in the release layout).
"""

from oncopipe.contract import DatasetSpec, Lazy
from oncopipe.datasets.mosmed import params

SPEC = DatasetSpec(
    name="mosmed",
    class_names=params.CLASS_NAMES,
    predict_input=params.PREDICT_INPUT,
    demo_params=params.DemoParams,
    prepare_params=params.PrepareParams,
    provenance=params.PROVENANCE,
    write_demo=Lazy(f"{__name__}.demo", "write_demo"),
    prepare=Lazy(f"{__name__}.prepare", "prepare"),
    preprocess_one=Lazy(f"{__name__}.prepare", "preprocess_one"),
)
