"""PCam as published on Kaggle (histopathologic-cancer-detection): 96 x 96 H&E lymph-node
patches, label 1 when tumour reaches the centre 32 x 32 pixels. See docs/image-datasets.md."""

from oncopipe.datasets.pcam.demo import DemoParams, write_demo
from oncopipe.datasets.pcam.prepare import CLASS_NAMES, PrepareParams, prepare, preprocess_one

TASKS: tuple[str, ...] = ("binary",)

__all__ = ["CLASS_NAMES", "TASKS", "DemoParams", "PrepareParams", "prepare", "preprocess_one",
           "write_demo"]
