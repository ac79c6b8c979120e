"""demo@breakhis -> prepare_breakhis -> shard@breakhis, run by DVC in a copy of the tree."""

from __future__ import annotations

import json

import polars as pl
import pytest
from dvc_project import DvcProject

from oncopipe.core.manifest import read_manifest


@pytest.mark.slow
def test_breakhis_stages_run_then_are_up_to_date_and_rerun_on_a_param_change(tmp_path):
    project = DvcProject(tmp_path)
    params = project.params
    params["breakhis"]["demo"].update(patients_per_subtype=2, images_per_magnification=[1, 1],
                                      layout="kaggle")
    params["breakhis"]["prepare"].update(image_size=32, workers=1)
    project.write_params()
    run = project.run
    run("dvc", "repro", "shard@breakhis")
    assert "up to date" in run("dvc", "status", "shard@breakhis")

    out = tmp_path / "data" / "prepared" / "breakhis"
    report = json.loads((out / "report.json").read_text())
    n_png = 2 * 8 * 4  # folders x magnifications x 1 image
    assert report["read"] == n_png + 1 and report["kept"] == n_png  # + Folds.csv
    assert report["rejected_by_reason"] == {"ignored": 1}
    df, meta = read_manifest(out / "manifest.parquet")
    assert len(df) == n_png and meta.dataset == "breakhis" and meta.task == "binary"
    index = pl.read_parquet(tmp_path / "data" / "shards" / "breakhis" / "index.parquet")
    splits = index.group_by("patient_id").agg(pl.col("split").n_unique())
    assert (splits["split"] == 1).all()  # no patient in two splits
    shared = index.filter(pl.col("patient_id") == "14-13412")["sample_id"]
    assert {s.split("-")[0] for s in shared} == {"SOB_M_DC", "SOB_M_LC"}  # one patient, kept whole

    params["breakhis"]["prepare"]["magnifications"] = ["400X"]
    project.write_params()
    assert "prepare_breakhis" in run("dvc", "status", "prepare_breakhis")
    log = run("dvc", "repro", "prepare_breakhis")
    assert "'demo@breakhis' didn't change" in log  # only prepare reruns
    df, _ = read_manifest(out / "manifest.parquet")
    assert len(df) == n_png // 4 and set(df["magnification"]) == {400}
