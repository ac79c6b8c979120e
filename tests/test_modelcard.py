"""The model card: every figure is metrics.json's or config.json's, every number printed in
MODELCARD.md is on the card, and a demo model (or one of unknown data) says so."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from synthetic_data import config_for, make_prepared

from oncopipe import datasets
from oncopipe.core.cards import CONFIG_FILE, EvaluatedModelCard, RawSource, ShardSummary
from oncopipe.core.config import ShardParams
from oncopipe.core.contract import Provenance
from oncopipe.evaluate import evaluation, modelcard
from oncopipe.shard.shards import write_shards
from oncopipe.train import training

ROOT = Path(__file__).resolve().parents[1]
RAW = {"source": "demo", "path": "data/demo/synthetic", "manifest_sha256": "ab" * 32}
RELEASE = Provenance(release="synthetic", page="https://example.org", licence="none",
                     citation="none", not_for=("counting anything",))
CI_KEYS = ("low", "high", "n", "n_patients", "n_eff", "small_n")
# a number outside backticks, not part of a word, a hash or a dotted version
NUMBER = re.compile(r"(?<![\w.-])-?\d+(?:\.\d+)?(?:e-?\d+)?(?![\w.])")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """(project root, model dir, metrics.json as written) of a small trained model."""
    root = tmp_path_factory.mktemp("card")
    prepared = make_prepared(root / "prepared", patients_per_class=(12, 8, 8),
                             samples_per_patient=2)
    shards = root / "shards"
    write_shards(prepared, shards, ShardParams(shard_size=16), 1, "h", RAW)
    cfg = config_for()
    model_dir = root / "models" / "synthetic"
    training.train(cfg, shards, model_dir, root / "live")
    evaluation.evaluate(cfg, shards, model_dir, root / "metrics", png=False)
    metrics = json.loads((root / "metrics" / "metrics.json").read_text())
    modelcard.write(model_dir, metrics, ShardSummary.read(shards), RELEASE,
                    cfg.evaluate.calibration_bins, "metrics/synthetic/metrics.json")
    return root, model_dir, metrics


def check_against_metrics(card: dict, metrics: dict, config: dict) -> None:
    """Every figure of ``modelcard.json`` against metrics.json and config.json."""
    for name, fig in card["test"].items():
        assert fig["value"] == metrics[name], name
        assert {k: fig[k] for k in CI_KEYS} == {k: metrics["ci"][name][k] for k in CI_KEYS}
    cal = card["calibration"]
    assert cal["value"] == metrics["ece"]
    assert {k: cal[k] for k in CI_KEYS} == {k: metrics["ci"]["ece"][k] for k in CI_KEYS}
    assert card["operating_point"] == metrics["operating_point"]
    assert card["operating_point"]["chosen_on"] == "val"
    assert (card["n_test"], card["n_test_patients"]) == (metrics["n_test"],
                                                         metrics["n_test_patients"])
    assert (card["ci_level"], card["ci_method"]) == (metrics["ci"]["level"],
                                                     metrics["ci"]["method"])
    assert card["model"] == config
    best = f"best_{config['train']['early_stopping_metric']}"
    assert card["kept_epoch"] == {"epoch": config["best_epoch"],
                                  "epochs_run": config["epochs_run"], "chosen_on": "val",
                                  "metric": config["train"]["early_stopping_metric"],
                                  "value": config[best]}
    raw = config["raw"] or {}
    assert card["training_data"]["manifest_sha256"] == raw.get("manifest_sha256")
    assert card["demo"] == (raw.get("source") != "real")


def numbers(value) -> set[float]:
    if isinstance(value, bool) or value is None:
        return set()
    if isinstance(value, int | float):
        return {float(value)}
    if isinstance(value, str):
        return {float(m) for m in NUMBER.findall(value)}
    items = value.values() if isinstance(value, dict) else value
    return set().union(*(numbers(v) for v in items)) if items else set()


def check_markdown(md: str, card: dict) -> None:
    """Every number printed in MODELCARD.md (outside code spans) is a number of the card."""
    text = re.sub(r"`[^`]*`", "", md)
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
    printed = {float(m) for m in NUMBER.findall(text)}
    known = numbers(card)
    missing = sorted(v for v in printed if v not in known)
    assert not missing, f"MODELCARD.md prints numbers not on the card: {missing}"


def test_every_figure_is_metrics_json_and_config_json(evaluated):
    root, model_dir, metrics = evaluated
    card = json.loads((model_dir / "modelcard.json").read_text())
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    check_against_metrics(card, metrics, config)
    summary = ShardSummary.read(root / "shards")
    assert card["training_data"]["train_samples"] == summary.splits["train"].samples
    assert card["training_data"]["test_samples"] == metrics["n_test"]
    assert card["calibration_bins"] == config_for().evaluate.calibration_bins
    assert "counting anything" in card["not_for"]
    live = json.loads((root / "live" / "metrics.json").read_text())
    assert live["best_epoch"] == card["kept_epoch"]["epoch"]
    assert EvaluatedModelCard.read(model_dir).to_json() == (model_dir
                                                             / "modelcard.json").read_text()


def test_markdown_prints_only_the_card_s_numbers_and_links_the_data_card(evaluated):
    _root, model_dir, metrics = evaluated
    md = (model_dir / "MODELCARD.md").read_text()
    card = json.loads((model_dir / "modelcard.json").read_text())
    check_markdown(md, card)
    for figure in (metrics["balanced_accuracy"], metrics["n_test"], metrics["ece"]):
        assert f"{figure:.10g}" in md
    assert "](../../data/exports/synthetic/DATACARD.md)" in md
    assert "not a diagnosis" in md and "Demo model" in md


def test_rewrite_is_byte_identical(evaluated, tmp_path):
    root, model_dir, metrics = evaluated
    again = tmp_path / "models" / "synthetic"
    shutil.copytree(model_dir, again)
    for name in ("modelcard.json", "MODELCARD.md"):
        (again / name).unlink()
    modelcard.write(again, metrics, ShardSummary.read(root / "shards"), RELEASE,
                    config_for().evaluate.calibration_bins, "metrics/synthetic/metrics.json")
    for name in ("modelcard.json", "MODELCARD.md"):
        assert (again / name).read_bytes() == (model_dir / name).read_bytes()


@pytest.mark.parametrize("raw,demo", [(None, True), (RAW, True),
                                      ({**RAW, "source": "real", "path": "/data/x"}, False)])
def test_only_a_model_of_real_data_is_not_marked_demo(evaluated, raw, demo):
    root, model_dir, metrics = evaluated
    base = EvaluatedModelCard.read(model_dir).model
    trained = base.model_copy(update={"raw": RawSource(**raw) if raw else None})
    card = modelcard.build(trained, metrics, ShardSummary.read(root / "shards"), None, 10,
                           "metrics.json")
    md = modelcard.render(card)
    assert card.demo is demo
    assert ("DEMO" in card.title) is demo and ("Demo model" in md) is demo
    assert ("source is unknown" in md) is (raw is None)
    assert "research" in card.intended_use and "not a diagnosis" in card.intended_use


@pytest.mark.parametrize("name", datasets.NAMES)
def test_the_pipeline_s_model_cards_match_its_metrics(name):
    """The cards `dvc repro` wrote (skipped before it ran) against the metrics it wrote."""
    model_dir = ROOT / "models" / name
    if not (model_dir / "modelcard.json").is_file():
        pytest.skip(f"{model_dir}/modelcard.json: run `dvc repro` first")
    card = json.loads((model_dir / "modelcard.json").read_text())
    check_against_metrics(card, json.loads((ROOT / "metrics" / name / "metrics.json")
                                           .read_text()),
                          json.loads((model_dir / CONFIG_FILE).read_text()))
    check_markdown((model_dir / "MODELCARD.md").read_text(), card)
    data_card = ROOT / "data" / "exports" / name / "datacard.json"
    if data_card.is_file():  # the data card it links to describes the data it was trained on
        assert card["training_data"]["data_card"] == f"data/exports/{name}/DATACARD.md"
        data = json.loads(data_card.read_text())
        assert data["manifest_sha256"] == card["training_data"]["manifest_sha256"]
        assert data["demo"] == card["demo"]
