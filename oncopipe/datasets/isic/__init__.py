"""SIIM-ISIC Melanoma Classification 2020 (Kaggle): dermoscopy photographs, benign or
malignant, several per patient. See docs/image-datasets.md."""

from oncopipe.datasets.isic.demo import DemoParams, write_demo
from oncopipe.datasets.isic.prepare import CLASS_NAMES, PrepareParams, prepare, preprocess_one

TASKS: tuple[str, ...] = ("binary",)

__all__ = ["CLASS_NAMES", "TASKS", "DemoParams", "PrepareParams", "prepare", "preprocess_one",
           "write_demo"]
