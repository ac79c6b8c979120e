"""SIIM-ISIC Melanoma Classification 2020 (Kaggle): dermoscopy photographs, benign or
malignant, several per patient. See docs/image-datasets.md."""

from oncopipe.core.contract import DatasetSpec
from oncopipe.datasets.isic import params

SPEC = DatasetSpec.of_package(__name__, params)
