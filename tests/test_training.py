"""Training loop: learns, is deterministic on CPU, resumes, stops early, schedules."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from synthetic_data import SMALL_TRAIN, config_for, make_shards

from oncopipe.core.config import AugmentParams, ShardParams
from oncopipe.core.errors import ModelError
from oncopipe.learn import inference
from oncopipe.train import distributed, training
from oncopipe.train.augment import augment_batch

TRAIN_ONE_EPOCH = training.train_one_epoch
REPO = Path(__file__).resolve().parents[1]


def _checkpoint_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# What a resume checkpoint can hold instead of one, and what the refusal says of it
CKPT = _checkpoint_bytes({"model": {"w": torch.zeros(64, 64)}, "run": "x", "state": "{}"})
BAD_CHECKPOINTS = {
    "empty": (b"", "EOFError: the file ends early"),
    # torch's zip reader raises RuntimeError or OSError, by where the cut falls
    "truncated": (CKPT[:len(CKPT) // 2], "not a readable training checkpoint: truncated, or "
                                         "not written by torch.save ("),
    "garbage": (b"{not a checkpoint", "UnpicklingError: Unsupported operand 123"),
    "not a mapping": (_checkpoint_bytes([torch.zeros(2)]), "holds a list, not a mapping"),
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("train"), ShardParams(shard_size=16),
                       patients_per_class=(12, 8), samples_per_patient=3)


def _train(shards, out, **changes):
    cfg = config_for(dataclasses.replace(SMALL_TRAIN, **changes))
    card = training.train(cfg, shards, out / "model", out / "live")
    return card, torch.load(out / "model" / "model.pt", weights_only=True)


def test_learns_writes_outputs_and_is_deterministic(shards, tmp_path):
    card_a, state_a = _train(shards, tmp_path / "a")
    card_b, state_b = _train(shards, tmp_path / "b")
    assert card_a == card_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    for name in (inference.MODEL_FILE, inference.CONFIG_FILE):  # byte for byte
        assert (tmp_path / "a" / "model" / name).read_bytes() == \
            (tmp_path / "b" / "model" / name).read_bytes()
    assert (tmp_path / "a" / "live" / "metrics.json").read_bytes() == \
        (tmp_path / "b" / "live" / "metrics.json").read_bytes()
    assert card_a.architecture.model == "cnn7" and not card_a.architecture.mean
    live = json.loads((tmp_path / "a" / "live" / "metrics.json").read_text())
    # only the kept epoch's validation figures: no last-epoch val.* to mistake for them
    assert "val" not in live and "train" not in live
    assert live["best_val"]["balanced_accuracy"] >= 0.8
    assert live["best_epoch"] == card_a.best_epoch
    kept = (tmp_path / "a" / "live" / "plots" / "metrics" / "val" / "balanced_accuracy.tsv")
    rows = [line.split("\t") for line in kept.read_text().splitlines()[1:]]
    assert float(rows[card_a.best_epoch - 1][1]) == pytest.approx(
        live["best_val"]["balanced_accuracy"], abs=1e-6)
    assert (tmp_path / "a" / "live" / "plots" / "metrics" / "train" / "loss.tsv").is_file()
    assert card_a.class_names == ("class0", "class1") and card_a.sample_shape == (1, 16, 16)
    assert not (tmp_path / "a" / "model" / training.LAST_FILE).exists()
    model, card = inference.load_model(tmp_path / "a" / "model")
    assert not model.training and card.run == card_a.run


def _count_epochs(monkeypatch, interrupt_at: int = 0) -> list[int]:
    """Count ``train_one_epoch`` calls; a Ctrl-C (KeyboardInterrupt) at call ``interrupt_at``."""
    calls: list[int] = []

    def counted(*args, **kwargs):
        calls.append(1)
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return TRAIN_ONE_EPOCH(*args, **kwargs)

    monkeypatch.setattr(training, "train_one_epoch", counted)
    return calls


def test_resume_after_interruption_gives_the_same_model(shards, tmp_path, monkeypatch):
    _, uninterrupted = _train(shards, tmp_path / "full")
    _count_epochs(monkeypatch, interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        _train(shards, tmp_path / "cut")
    assert (tmp_path / "cut" / "model" / training.LAST_FILE).is_file()
    calls = _count_epochs(monkeypatch)
    shutil.rmtree(tmp_path / "cut" / "live")  # DVC removes the stage's metric outputs
    card, resumed = _train(shards, tmp_path / "cut")
    assert len(calls) == SMALL_TRAIN.epochs - 2  # two epochs were done before the interruption
    assert card.epochs_run == SMALL_TRAIN.epochs
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
    curve = "plots/metrics/train/loss.tsv"
    assert (tmp_path / "cut" / "live" / curve).read_text() == \
        (tmp_path / "full" / "live" / curve).read_text()  # the whole curve, no restart at 0


def test_checkpoint_of_other_params_is_not_resumed(shards, tmp_path, monkeypatch):
    _count_epochs(monkeypatch, interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        _train(shards, tmp_path / "x", lr=1.0e-3)
    calls = _count_epochs(monkeypatch)
    card, _ = _train(shards, tmp_path / "x", lr=2.0e-3, epochs=1)
    # resuming the lr 1e-3 checkpoint (one epoch done) would run no epoch at all
    assert len(calls) == 1 and card.epochs_run == 1 and card.train.lr == 2.0e-3


@pytest.mark.parametrize("case", BAD_CHECKPOINTS)
def test_an_unreadable_resume_checkpoint_stops_training_and_says_to_delete_it(shards, tmp_path,
                                                                              case):
    data, problem = BAD_CHECKPOINTS[case]
    last = tmp_path / "model" / training.LAST_FILE
    last.parent.mkdir()
    last.write_bytes(data)
    with pytest.raises(ModelError) as caught:
        _train(shards, tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{last}: ") and problem in message, message
    assert message.endswith("delete it to start this training run over from its first epoch")
    assert last.read_bytes() == data  # the run's state is the user's to discard, not ours
    assert not (tmp_path / "model" / inference.MODEL_FILE).exists()


def test_the_train_stage_refuses_a_truncated_checkpoint_in_one_line(tmp_path):
    project = tmp_path / "project"
    make_shards(tmp_path / "synthetic", ShardParams(shard_size=16), patients_per_class=(6, 6),
                samples_per_patient=2)
    (project / "data" / "shards").mkdir(parents=True)
    shutil.move(tmp_path / "synthetic" / "shards", project / "data" / "shards" / "pcam")
    shutil.copy(REPO / "params.yaml", project / "params.yaml")
    last = project / "models" / "pcam" / training.LAST_FILE
    last.parent.mkdir(parents=True)
    last.write_bytes(CKPT[:len(CKPT) // 2])
    done = subprocess.run([sys.executable, "-m", "stages.train", "pcam"], cwd=project,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert re.fullmatch(r"train: models/pcam/last\.pt: not a readable training checkpoint: "
                        r"truncated, or not written by torch\.save \(\w+: .*\); delete it to "
                        r"start this training run over from its first epoch", lines[-1]), \
        done.stderr
    assert "Traceback" not in done.stderr and last.is_file()


def test_early_stopping_when_the_metric_does_not_improve(shards, tmp_path):
    card, _ = _train(shards, tmp_path, lr=1.0e-12, epochs=6, patience=2, schedule="none")
    assert card.epochs_run == 3 and card.best_epoch == 1


def test_exponential_schedule_is_a_staircase():
    p = dataclasses.replace(SMALL_TRAIN, schedule="exponential", lr=1.0, decay_rate=0.5,
                            decay_steps=3)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=p.lr)
    sched, per_step = training.make_schedule(p, opt, steps_per_epoch=10)
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert per_step and lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def test_plateau_schedule_follows_the_stopping_metric():
    p = dataclasses.replace(SMALL_TRAIN, schedule="plateau", plateau_patience=0,
                            plateau_factor=0.5, early_stopping_metric="val_accuracy")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched, per_step = training.make_schedule(p, opt, steps_per_epoch=10)
    sched.step(0.5)
    sched.step(0.6)  # improving accuracy: no change
    assert opt.param_groups[0]["lr"] == 1.0
    sched.step(0.4)
    assert not per_step and opt.param_groups[0]["lr"] == 0.5


def test_augmentation_is_seeded_and_shape_preserving():
    x = torch.rand(6, 1, 12, 12)
    p = AugmentParams(hflip=True, vflip=True, rotate_deg=20.0, shift=0.1, zoom=0.1)
    a = augment_batch(x, p, torch.Generator().manual_seed(3))
    b = augment_batch(x, p, torch.Generator().manual_seed(3))
    c = augment_batch(x, p, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert augment_batch(x, AugmentParams(), torch.Generator()) is x  # nothing asked


def test_flip_only_mirrors_and_volumes_get_one_transform_for_all_slices():
    x = torch.rand(64, 1, 5, 5)
    out = augment_batch(x, AugmentParams(hflip=True), torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()
    slice_ = torch.rand(4, 1, 1, 9, 9)
    vol = slice_.expand(4, 1, 3, 9, 9).contiguous()  # three identical slices
    out = augment_batch(vol, AugmentParams(rotate_deg=30.0), torch.Generator().manual_seed(1))
    assert out.shape == vol.shape
    assert torch.equal(out[:, :, 0], out[:, :, 2]) and not torch.equal(out, vol)


def test_rng_record_restores_the_generators_and_cpu_is_deterministic():
    rt = inference.Runtime(torch.device("cpu"))
    training.configure_determinism(dataclasses.replace(SMALL_TRAIN, deterministic=False), rt)
    assert torch.are_deterministic_algorithms_enabled()  # CPU: always
    torch.manual_seed(7)
    saved = distributed.rng_states(rt)
    expected = torch.rand(5)
    torch.manual_seed(8)
    distributed.restore_rng(saved, rt)
    assert torch.equal(torch.rand(5), expected)
    assert saved["cuda"] == []  # no GPU here; on CUDA each rank's generator state is kept
