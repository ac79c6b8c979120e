"""Provenance of the release for the data card: what docs/data.md says, in one place."""

from oncopipe.datacard import Provenance

PROVENANCE = Provenance(
    release="BreakHis v1",
    page="https://web.inf.ufpr.br/vri/databases/breast-cancer-histopathological-database-breakhis/",
    licence="see the provider's page for the terms of use",
    citation=(
        "Spanhol FA, Oliveira LS, Petitjean C, Heutte L. A dataset for breast cancer "
        "histopathological image classification. IEEE Transactions on Biomedical "
        "Engineering 63(7): 1455-1462, 2016"
    ),
    not_for=(
        "a diagnosis of breast cancer: 82 patients from one laboratory",
        "image-level splits: images of one patient are correlated",
    ),
)
