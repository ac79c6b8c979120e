"""PCam as published on Kaggle (histopathologic-cancer-detection): 96 x 96 H&E lymph-node
patches, label 1 when tumour reaches the centre 32 x 32 pixels. See docs/image-datasets.md."""

from oncopipe.core.contract import DatasetSpec
from oncopipe.datasets.pcam import params

SPEC = DatasetSpec.of_package(__name__, params)
