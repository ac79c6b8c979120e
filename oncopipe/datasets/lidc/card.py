"""Provenance of the release for the data card: what docs/data.md says, in one place."""

from oncopipe.datacard import Provenance

PROVENANCE = Provenance(
    release="LIDC-IDRI (The Cancer Imaging Archive)",
    page="https://www.cancerimagingarchive.net/collection/lidc-idri/",
    licence="Creative Commons Attribution 3.0 when we last read it; see the provider's page",
    citation=(
        "Armato SG III, McLennan G, Bidaut L, McNitt-Gray MF, Meyer CR, Reeves AP, Zhao "
        "B, Aberle DR, Henschke CI, Hoffman EA, Kazerooni EA, MacMahon H, van Beek EJR, "
        "Yankelevitz D, et al. The Lung Image Database Consortium (LIDC) and Image "
        "Database Resource Initiative (IDRI): a completed reference database of lung "
        "nodules on CT scans. Medical Physics 38: 915-931, 2011; and TCIA's citation "
        "guidelines (Clark K et al., J Digit Imaging 26(6): 1045-1057, 2013)"
    ),
    not_for=(
        "a diagnosis of malignancy: the labels are readers' annotations and ratings, not pathology",
        "estimating prevalence: the cohort is enriched for nodules",
    ),
)
