"""demo@lidc -> lidc_lesions -> prepare_lidc, run by DVC in a copy of the tree."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
from dvc_project import DvcProject

from oncopipe.core.manifest import check_arrays, read_manifest


def test_lidc_stages_run_then_do_nothing_then_rerun_only_what_a_param_touches(tmp_path):
    project = DvcProject(tmp_path)
    params = project.params
    params["lidc"]["demo"].update(n_patients=8, rows=64, pixel_spacing=3.0, n_slices=20,
                                  nodules=[1, 2], small_nodules=[1, 1], non_nodules=[1, 1])
    params["lidc"]["prepare"]["workers"] = 1
    project.write_params()
    run = project.run
    log = run("dvc", "repro", "prepare_lidc")
    for stage in ("demo@lidc", "lidc_lesions", "prepare_lidc"):
        assert f"Running stage '{stage}'" in log
    out = tmp_path / "data" / "prepared" / "lidc"
    table = pl.read_parquet(out / "lesions.parquet")
    lesions_report = json.loads((out / "lesions_report.json").read_text())
    assert lesions_report["lesions"] == len(table) > 0
    assert lesions_report["rejected_by_reason"]["not CT"] == 1  # the DX study
    df, meta = read_manifest(out / "manifest.parquet")
    check_arrays(df, meta, out)
    assert meta.dataset == "lidc" and meta.task == "nodule_type"
    assert len(df) == sum(len(s) for s in table["slices"])
    assert (out / "contact_sheet.png").stat().st_size > 0

    log = run("dvc", "repro", "prepare_lidc")
    assert "Running stage" not in log  # a second repro does nothing
    assert "up to date" in run("dvc", "status", "prepare_lidc")

    before = (out / "lesions.parquet").read_bytes()
    params["lidc"]["prepare"]["crops"]["input"] = "3d"
    project.write_params()
    log = run("dvc", "repro", "prepare_lidc")
    assert "Running stage 'prepare_lidc'" in log
    assert "Running stage 'lidc_lesions'" not in log  # crop geometry is not a lesion param
    assert (out / "lesions.parquet").read_bytes() == before
    df, meta = read_manifest(out / "manifest.parquet")
    assert meta.layout == "CDHW" and len(df) == len(table)
    assert np.load(out / "crops_3d.npy", mmap_mode="r").shape == (len(table), 1, 32, 32, 32)
