"""LIDC-IDRI: CT series (DICOM) + four readers' XML -> lesion table -> HU-normalised crops.

Two steps, two DVC stages: ``lidc_lesions`` (:mod:`.lesions`: headers and XML only, so a cohort
can be inspected before any pixel work) writes ``lesions.parquet``; ``prepare_lidc`` (the
generic prepare stage calling :mod:`.prepare`) crops every lesion of the table
into 2D and 3D arrays and writes the common manifest. See docs/lidc.md.
"""

from oncopipe.core.contract import DatasetSpec
from oncopipe.datasets.lidc import params

SPEC = DatasetSpec.of_package(__name__, params, view="scan_view",
                              input_on_view="crop_on_view")
