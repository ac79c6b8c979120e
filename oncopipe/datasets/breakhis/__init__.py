"""BreakHis v1 (breast cancer histopathology, 7,909 PNGs of 82 patients at 4 magnifications).

Tasks: ``binary`` (benign, malignant) and ``subtype`` (the eight histological subtypes).
The split unit is the slide id from the patient folder (``SOB_B_A_14-22549AB`` ->
``14-22549AB``); slide ``14-13412``, filed under both ductal and lobular carcinoma, is one
patient. See docs/breakhis.md for the layout, the quirks and the reference models.
"""

from oncopipe.core.contract import DatasetSpec
from oncopipe.datasets.breakhis import params

SPEC = DatasetSpec.of_package(__name__, params)
