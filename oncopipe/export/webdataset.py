"""WebDataset: one POSIX tar per split, ``<split>-000000.tar``, one sample per key.

Each sample is ``<key>.npy`` (the array as stored, channel-first), ``<key>.cls`` (the
class index) and ``<key>.json`` (sample id, patient id, split, class name). Stream it
with ``webdataset.WebDataset(url).decode()``. Tars are byte-stable: members sorted, no
timestamps, owner 0.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np

from oncopipe.export.source import SPLITS, Source


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write(source: Source, out_dir: Path, params) -> dict:
    written = {}
    for split in SPLITS:
        rows = source.split(split).to_dicts()
        if not rows:
            continue
        name = f"{split}-000000.tar"
        with tarfile.open(out_dir / name, "w", format=tarfile.USTAR_FORMAT) as tar:
            for k, row in enumerate(rows):
                key = f"{split}_{k:06d}"
                buf = io.BytesIO()
                np.save(buf, source.array(row), allow_pickle=False)
                _add(tar, f"{key}.cls", str(row["label"]).encode())
                meta = {"sample_id": row["sample_id"], "patient_id": row["patient_id"],
                        "split": split, "class": source.class_names[row["label"]]}
                _add(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
                _add(tar, f"{key}.npy", buf.getvalue())
        written[name] = len(rows)
    return written
