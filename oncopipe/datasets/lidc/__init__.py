"""LIDC-IDRI: CT series (DICOM) + four readers' XML -> lesion table -> HU-normalised crops.

Two steps, two DVC stages: ``lidc_lesions`` (:mod:`.lesions`: headers and XML only, so a cohort
can be inspected before any pixel work) writes ``lesions.parquet``; ``prepare_lidc`` (the
generic prepare stage calling :mod:`.prepare`) crops every lesion of the table
into 2D and 3D arrays and writes the common manifest. See docs/lidc.md.
"""

from oncopipe.contract import DatasetSpec, Lazy
from oncopipe.datasets.lidc import params

SPEC = DatasetSpec(
    name="lidc",
    class_names=params.CLASS_NAMES,
    predict_input=params.PREDICT_INPUT,
    demo_params=params.DemoParams,
    prepare_params=params.PrepareParams,
    provenance=params.PROVENANCE,
    write_demo=Lazy(f"{__name__}.demo", "write_demo"),
    prepare=Lazy(f"{__name__}.prepare", "prepare"),
    preprocess_one=Lazy(f"{__name__}.prepare", "preprocess_one"),
    view=Lazy(f"{__name__}.prepare", "scan_view"),
)
