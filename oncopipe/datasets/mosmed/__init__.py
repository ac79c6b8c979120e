"""MosMedData (COVID19_1110): chest CT in NIfTI -> HU-windowed 64 x 128 x 128 volumes.

See docs/mosmed.md. Modules: :mod:`.registry` (which studies exist, their categories),
:mod:`.volume` (read, reorient from the affine, window, resample), :mod:`.prepare` (the
prepare step), :mod:`.demo` (synthetic data in the release layout).
"""

from oncopipe.core.contract import DatasetSpec
from oncopipe.datasets.mosmed import params

SPEC = DatasetSpec.of_package(__name__, params, view="scan_view")
