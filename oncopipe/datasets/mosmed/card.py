"""Provenance of the release for the data card: what docs/data.md says, in one place."""

from oncopipe.datacard import Provenance

PROVENANCE = Provenance(
    release="MosMedData COVID19_1110",
    page="https://mosmed.ai/datasets/covid19_1110/",
    licence="see the provider's page",
    citation=(
        "Morozov SP, Andreychenko AE, Pavlov NA, Vladzymyrskyy AV, Ledikhova NV, "
        "Gombolevskiy VA, Blokhin IA, Gelezhe PB, Gonchar AV, Chernina VY. MosMedData: "
        "chest CT scans with COVID-19 related findings dataset. arXiv:2005.06465, 2020"
    ),
    not_for=(
        "a diagnosis of COVID-19: the categories grade CT findings, not a laboratory test",
        "other lung diseases: the release has no other findings",
    ),
)
