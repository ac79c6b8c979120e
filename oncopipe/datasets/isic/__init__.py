"""SIIM-ISIC Melanoma Classification 2020 (Kaggle): dermoscopy photographs, benign or
malignant, several per patient. See docs/image-datasets.md."""
