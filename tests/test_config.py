"""Generic params sections: defaults, strict keys and types, range checks with key paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from oncopipe.core.config import (
    EvaluateParams,
    ParamsError,
    ShardParams,
    TrainParams,
    TrainProfiles,
    UndeclaredParamError,
)
from oncopipe.core.settings import validate
from oncopipe.datasets import load_config


def test_profiles_build_with_nested_augmentation():
    profiles = validate(TrainProfiles, {
        "demo": {"model": "cnn7", "width": 0.5, "lr": "1e-3", "augment": {"hflip": True}},
        "reference": {"model": "resnet50", "weights": "IMAGENET1K_V2", "finetune": "head"},
    }, "lidc.train")
    assert profiles.demo.lr == 1.0e-3 and profiles.demo.augment.hflip
    assert profiles.reference.finetune == "head" and profiles.reference.epochs == 10


@pytest.mark.parametrize(("cls", "data", "message"), [
    (TrainParams, {"model": "resnet34"}, "lidc.train.demo.model"),
    (TrainParams, {"lr": 0}, r"lidc\.train\.demo\.lr: must be > 0, got 0"),
    (TrainParams, {"augment": {"rotate": 10}}, "lidc.train.demo.augment.rotate: unknown key"),
    (TrainParams, {"augment": {"shift": 0.7}}, r"augment\.shift: must be < 0\.5"),
    (TrainParams, {"early_stopping_metric": "val_auc"}, "early_stopping_metric"),
    (TrainParams, {"batch_size": 1.5}, "expected an integer"),
    (ShardParams, {"ratios": [0.5, 0.5, 0.5]}, "sum to 1"),
    (ShardParams, {"ratios": [0.0, 0.5, 0.5]}, "training split cannot be empty"),
    (ShardParams, {"balance": "smote"}, "balance"),
    (EvaluateParams, {"ci": 1.5}, r"ci: must be < 1"),
])
def test_bad_values_name_the_key(cls, data, message):
    with pytest.raises(ParamsError, match=message):
        validate(cls, data, "lidc.train.demo")


# --------------------------------------------------------------------------------------------
# Declared reads: the guard, the per-stage hash, one-line errors, DVC's write-back layout.
# --------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _params(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    path = tmp_path / f"params-{len(list(tmp_path.glob('params-*')))}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_undeclared_keys_raise_and_declared_ones_read(tmp_path):
    cfg = load_config("isic", _params(tmp_path), reads=("raw", "task", "prepare"))
    assert cfg.prepare.size == 64 and cfg.task == "binary"
    with pytest.raises(UndeclaredParamError, match=r"isic\.train"):
        _ = cfg.train.lr
    with pytest.raises(UndeclaredParamError, match="seed"):
        _ = cfg.seed + 1
    partial = load_config("lidc", _params(tmp_path), reads=("prepare.cohort",))
    assert partial.prepare.cohort.min_readers == 1
    with pytest.raises(UndeclaredParamError, match=r"lidc\.prepare\.crops"):
        _ = partial.prepare.crops


def test_params_hash_covers_only_the_declared_keys(tmp_path):
    reads = ("raw", "task", "prepare")
    base = load_config("isic", _params(tmp_path), reads=reads).params_hash
    other_lr = load_config("isic", _params(tmp_path, isic__train__demo__lr=0.5), reads=reads)
    other_size = load_config("isic", _params(tmp_path, isic__prepare__size=32), reads=reads)
    assert other_lr.params_hash == base  # a training param leaves the prepared data alone
    assert other_size.params_hash != base
    shard = ("seed", "shard")
    assert load_config("isic", _params(tmp_path, seed=1), reads=shard).params_hash != \
        load_config("isic", _params(tmp_path), reads=shard).params_hash


def test_a_users_mistake_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "params.yaml").write_text(
        (ROOT / "params.yaml").read_text().replace("balance: undersample", "balance: smote", 1))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "stages.shard", "isic"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "isic.shard.balance" in lines[0] and "Traceback" not in lines[0]


@pytest.mark.parametrize("args", [[], ["isic", "pcam"]])
def test_a_stage_without_exactly_one_dataset_says_so(args, capsys):
    from stages import shard

    with pytest.raises(SystemExit) as stop:
        shard.main(args)
    assert stop.value.code == 2
    assert capsys.readouterr().err == \
        f"shard: expected one argument, the dataset name; got {args!r}\n"


def test_params_yaml_is_written_as_dvc_writes_it_back(tmp_path):
    """``dvc exp run -S`` re-dumps params.yaml through DVC's own YAML path (Hydra overrides
    merged into ruamel's round trip): a file already in that style comes back unchanged."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    committed = (ROOT / "params.yaml").read_text()
    path.write_text(committed)
    apply_overrides(str(path), [f"seed={yaml.safe_load(committed)['seed']}"])
    assert path.read_text() == committed, "params.yaml is not in DVC's style: see the diff"

