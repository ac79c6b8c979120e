"""The ``limits:`` section of params.yaml: validated, passed to the readers of every stage that
reads raw files (and to ``predict``/``serve``), and in the provenance hash only when changed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from oncopipe.core import limits
from oncopipe.core.config import ParamsError
from oncopipe.datasets import load_config as load

REPO = Path(__file__).resolve().parents[1]
PREPARE_READS = ("limits", "raw", "task", "prepare")


def _params(tmp_path: Path, section: object = None) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    if section is None:
        params.pop("limits")
    else:
        params["limits"] = section
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_the_committed_params_keep_the_defaults():
    assert yaml.safe_load((REPO / "params.yaml").read_text())["limits"] == {}
    assert load("lidc", REPO / "params.yaml").limits == limits.DEFAULT


@pytest.mark.parametrize(("section", "words"), [
    ({"max_voxel": 5}, "limits.max_voxel: unknown limit"),
    ({"max_voxels": 0}, "limits.max_voxels: must be a positive integer"),
    ({"max_voxels": "many"}, "limits.max_voxels: must be a positive integer"),
    ([1, 2], "limits: expected a mapping"),
])
def test_a_bad_limit_is_named(tmp_path, section, words):
    with pytest.raises(ParamsError, match=words):
        load("pcam", _params(tmp_path, section))


def test_only_changed_limits_enter_the_provenance_hash(tmp_path):
    without = load("pcam", _params(tmp_path, None), reads=PREPARE_READS).params_hash
    defaults = load("pcam", _params(tmp_path, {"max_voxels": limits.DEFAULT.max_voxels}),
                    reads=PREPARE_READS).params_hash
    raised = load("pcam", _params(tmp_path, {"max_voxels": 2**30}),
                  reads=PREPARE_READS).params_hash
    assert without == defaults != raised

