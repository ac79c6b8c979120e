"""Provenance of the release for the data card: what docs/data.md says, in one place."""

from oncopipe.datacard import Provenance

PROVENANCE = Provenance(
    release="PCam, Kaggle histopathologic-cancer-detection",
    page="https://www.kaggle.com/c/histopathologic-cancer-detection",
    licence=("the Kaggle competition's rules govern the Kaggle download; PCam's repository "
             "states its own licence (CC0 when we last read it; see the provider's page)"),
    citation=(
        "Veeling BS, Linmans J, Winkens J, Cohen T, Welling M. Rotation equivariant CNNs "
        "for digital pathology. MICCAI 2018; Ehteshami Bejnordi B, Veta M, Johannes van "
        "Diest P, et al. Diagnostic assessment of deep learning algorithms for detection "
        "of lymph node metastases in women with breast cancer. JAMA 318(22): 2199-2210, "
        "2017"
    ),
    not_for=(
        "a diagnosis of metastasis on a whole slide: the labels are of 96 x 96 patches",
        "patient-level claims: the Kaggle release has no patient ids, so a patient may "
        "cross splits",
    ),
)
