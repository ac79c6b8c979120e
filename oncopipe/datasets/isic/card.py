"""Provenance of the release for the data card: what docs/data.md says, in one place."""

from oncopipe.datacard import Provenance

PROVENANCE = Provenance(
    release="SIIM-ISIC Melanoma Classification 2020",
    page="https://www.kaggle.com/c/siim-isic-melanoma-classification",
    licence=("Creative Commons Attribution-NonCommercial 4.0 (CC BY-NC 4.0) when we last "
             "read it; see the provider's page"),
    citation=(
        "Rotemberg V, Kurtansky N, Betz-Stablein B, et al. A patient-centric dataset of "
        "images and metadata for identifying melanomas using clinical context. Scientific "
        "Data 8: 34, 2021"
    ),
    not_for=(
        "commercial use (the licence is non-commercial)",
        "a diagnosis of melanoma: the labels are the release's, for research",
    ),
)
