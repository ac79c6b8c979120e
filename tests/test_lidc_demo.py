"""LIDC params validation and demo determinism."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from oncopipe import datasets
from oncopipe.core import config
from oncopipe.datasets.lidc.demo import write as write_demo
from oncopipe.datasets.lidc.params import DemoParams

ROOT = Path(__file__).resolve().parents[1]
TINY = DemoParams(seed=9, n_patients=8, rows=64, pixel_spacing=3.0, n_slices=16,
                  nodules=(1, 1), small_nodules=(1, 1), non_nodules=(0, 1))


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_repo_params_are_valid():
    cfg = datasets.load_config("lidc", ROOT / "params.yaml")
    assert cfg.task in datasets.spec("lidc").tasks
    assert cfg.demo.n_patients >= 12
    assert cfg.prepare.crops.hu_window == (-1000.0, 400.0)
    assert cfg.prepare.crops.size_2d == 64


@pytest.mark.parametrize(("path", "value", "message"), [
    (("prepare", "crops", "inputs"), "2d", "lidc.prepare.crops.inputs: unknown key"),
    (("prepare", "crops", "input"), "4d", "lidc.prepare.crops.input: '4d' is not one of"),
    (("prepare", "crops", "hu_window"), [400.0, -1000.0], "lidc.prepare.crops: hu_window"),
    (("prepare", "grouping", "source"), "db", "lidc.prepare.grouping.source"),
    (("prepare", "cohort", "kinds"), ["nodule", "mass"],
     "lidc.prepare.cohort.kinds[1]: 'mass' is not one of"),
    (("demo", "n_patients"), 3, "lidc.demo: n_patients must be >= 8"),
    # an older params.yaml: the lesion table's path is fixed now, like its siblings'
    (("prepare", "lesion_table"), "data/prepared/lidc/lesions.parquet",
     "lidc.prepare.lesion_table: unknown key (allowed: cohort, crops, grouping, workers)"),
])
def test_bad_params_name_the_key(tmp_path, path, value, message):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    node = params["lidc"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    file = tmp_path / "params.yaml"
    file.write_text(yaml.safe_dump(params))
    with pytest.raises(config.ParamsError, match=re.escape(message)):
        datasets.load_config("lidc", file)


def test_demo_is_byte_identical_for_a_seed_and_differs_for_another(tmp_path):
    write_demo(TINY, tmp_path / "a")
    write_demo(TINY, tmp_path / "b")
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a == b
    assert sum(name.endswith(".dcm") for name in a) >= 8 * 16
    write_demo(DemoParams(**{**TINY.__dict__, "seed": 10}), tmp_path / "c")
    assert _tree(tmp_path / "c") != a
