"""MONAI datalist: a Decathlon-style ``datalist.json`` over one file per sample.

Keys ``training`` (our train split, ``fold`` 1), ``validation`` (our val split, ``fold``
0) and ``test``; every entry has ``image``, ``label`` (class index), ``sample_id`` and
``patient_id``. Read it with ``monai.data.load_decathlon_datalist(path, data_list_key=...)``.
"""

from __future__ import annotations

import json
from pathlib import Path

from oncopipe.export import files
from oncopipe.export.source import Source

KEYS = {"train": "training", "val": "validation", "test": "test"}
FOLD = {"train": 1, "val": 0}


def write(source: Source, out_dir: Path, params) -> dict:
    datalist: dict = {
        "name": source.meta.dataset,
        "description": f"{source.meta.dataset} ({source.meta.task}), patient-level split",
        "labels": {str(i): n for i, n in enumerate(source.class_names)},
        "tensorImageSize": "4D" if source.volumetric else "3D",
    }
    for split, key in KEYS.items():
        entries = []
        rows = source.split(split).to_dicts()
        if rows:
            (out_dir / "images" / split).mkdir(parents=True)
        for k, row in enumerate(rows):
            array = source.array(row)
            name = f"images/{split}/{k:05d}{files.suffix(array, source.volumetric)}"
            spacing = source.spacing(row, array.shape[1:]) if source.volumetric else None
            (out_dir / name).write_bytes(files.encode(array, source.volumetric, spacing))
            entry = {"image": name, "label": row["label"], "sample_id": row["sample_id"],
                     "patient_id": row["patient_id"]}
            if split in FOLD:
                entry["fold"] = FOLD[split]
            entries.append(entry)
        datalist[key] = entries
    datalist["numTraining"] = len(datalist["training"])
    datalist["numTest"] = len(datalist["test"])
    (out_dir / "datalist.json").write_text(json.dumps(datalist, indent=1) + "\n",
                                           encoding="utf-8")
    return {KEYS[s]: len(datalist[KEYS[s]]) for s in KEYS}
