"""A byte-stable ``.npz``: NumPy's own ``savez`` stamps the current time into the zip."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np


def write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.save(buf, arrays[key], allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, buf.getvalue(), compress_type=zipfile.ZIP_DEFLATED,
                        compresslevel=1)
