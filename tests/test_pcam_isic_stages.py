"""The prepare_pcam / prepare_isic DVC stages, run by DVC in a copy of the tree on tiny demos."""

from __future__ import annotations

import json

import pytest
from dvc_project import DvcProject

from oncopipe.core.manifest import read_manifest


@pytest.mark.slow
def test_demo_and_prepare_stages_run_and_are_then_up_to_date(tmp_path):
    project = DvcProject(tmp_path)
    params = project.params
    params["pcam"]["demo"].update(n_train=24, n_test=2)
    params["isic"]["demo"].update(n_patients=5, images_per_patient=[2, 3], n_test=2,
                                  large_images=0, duplicates=1, malignant_fraction=0.3)
    params["isic"]["prepare"]["size"] = 32
    for ds in ("pcam", "isic"):
        params[ds]["prepare"]["workers"] = 1
    project.write_params()
    run = project.run
    run("dvc", "repro", "prepare_pcam", "prepare_isic")
    assert "up to date" in run("dvc", "status", "prepare_pcam", "prepare_isic")

    for ds, kept in (("pcam", 24), ("isic", None)):
        out = tmp_path / "data" / "prepared" / ds
        report = json.loads((out / "report.json").read_text())
        assert report["read"] == report["kept"] + report["rejected"]
        df, meta = read_manifest(out / "manifest.parquet")
        assert len(df) == report["kept"] == (kept or len(df))
        assert meta.dataset == ds and (out / "contact_sheet.png").is_file()
    isic_report = json.loads((tmp_path / "data/prepared/isic/report.json").read_text())
    assert isic_report["rejected_by_reason"] == {"duplicate": 1}
