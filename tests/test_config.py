"""Generic params sections: defaults, strict keys and types, range checks with key paths."""

from __future__ import annotations

import pytest

from oncopipe.config import (
    EvaluateParams,
    ParamsError,
    ShardParams,
    TrainParams,
    TrainProfiles,
    build,
)


def test_profiles_build_with_nested_augmentation():
    profiles = build(TrainProfiles, {
        "demo": {"model": "cnn7", "width": 0.5, "lr": "1e-3", "augment": {"hflip": True}},
        "reference": {"model": "resnet50", "weights": "IMAGENET1K_V2", "finetune": "head"},
    }, "lidc.train")
    assert profiles.demo.lr == 1.0e-3 and profiles.demo.augment.hflip
    assert profiles.reference.finetune == "head" and profiles.reference.epochs == 10


@pytest.mark.parametrize(("cls", "data", "message"), [
    (TrainParams, {"model": "resnet34"}, "lidc.train.demo.model"),
    (TrainParams, {"lr": 0}, "lr must be > 0"),
    (TrainParams, {"augment": {"rotate": 10}}, "lidc.train.demo.augment.rotate: unknown key"),
    (TrainParams, {"augment": {"shift": 0.7}}, "shift must be in"),
    (TrainParams, {"early_stopping_metric": "val_auc"}, "early_stopping_metric"),
    (TrainParams, {"batch_size": 1.5}, "expected an integer"),
    (ShardParams, {"ratios": [0.5, 0.5, 0.5]}, "sum to 1"),
    (ShardParams, {"ratios": [0.0, 0.5, 0.5]}, "training split cannot be empty"),
    (ShardParams, {"balance": "smote"}, "balance"),
    (EvaluateParams, {"ci": 1.5}, "ci must be in"),
])
def test_bad_values_name_the_key(cls, data, message):
    with pytest.raises(ParamsError, match=message):
        build(cls, data, "lidc.train.demo")
