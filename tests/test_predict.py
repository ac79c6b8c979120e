"""predict: one raw input through the dataset's preprocess_one and the trained model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from synthetic_data import SMALL_TRAIN, config_for, make_shards

from oncopipe import cli, predict
from oncopipe.core.config import ShardParams
from oncopipe.train import training

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A model trained on (3, 96, 96) uint8 samples: PCam's prepared layout."""
    root = tmp_path_factory.mktemp("predict")
    shards = make_shards(root, ShardParams(shard_size=16), patients_per_class=(6, 6),
                         samples_per_patient=1, size=96, channels=3)
    p = dataclasses.replace(SMALL_TRAIN, model="lenet5", epochs=1)
    training.train(config_for(p), shards, root / "model", root / "live")
    return root / "model"


def test_probabilities_of_one_array(model_dir):
    sample = np.full((3, 96, 96), 80, np.uint8)
    result = predict.predict_array(model_dir, sample)
    probs = result["probabilities"]
    assert set(probs) == {"class0", "class1"}
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert result["predicted"] == max(probs, key=probs.get)
    with pytest.raises(ValueError, match="trained on"):
        predict.predict_array(model_dir, np.zeros((1, 96, 96), np.uint8))


def test_in_words_lists_the_most_likely_class_first():
    text = predict.in_words({"probabilities": {"normal": 0.279, "abnormal": 0.721}})
    assert text == "72.1% abnormal, 27.9% normal"


def test_cli_predicts_a_raw_image_through_the_dataset_module(model_dir, tmp_path, capsys):
    image = tmp_path / "patch.tif"
    rng = np.random.default_rng(0)
    assert cv2.imwrite(str(image), rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
    argv = ["predict", "pcam", str(image), "--model", str(model_dir), "--params",
            str(ROOT / "params.yaml")]
    assert cli.main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["input"] == str(image)
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert cli.main(argv) == 0
    assert "% class" in capsys.readouterr().out
    assert cli.main([*argv[:2], str(tmp_path / "missing.tif"), *argv[3:]]) == 2
    assert "missing.tif" in capsys.readouterr().err


def test_a_3d_model_answers_what_the_plain_network_computes_and_explains_in_the_same_pass(
        tmp_path):
    """Predictor runs Conv3d on oneDNN for a batch of one; the logits stay the network's
    (float32 rounding apart), and explain gives predict's answer to the bit."""
    import torch
    from serve_project import untrained_card

    from oncopipe.core.config import TrainParams
    from oncopipe.learn import inference, models

    torch.manual_seed(0)
    shape = (1, 16, 48, 48)
    train = TrainParams(model="cnn3d", width=0.125)
    net = models.build(train, shape, 2).eval()
    torch.save(net.state_dict(), tmp_path / inference.MODEL_FILE)
    card = untrained_card(net, train, ["normal", "abnormal"])
    (tmp_path / inference.CONFIG_FILE).write_text(card.to_json())
    sample = np.random.default_rng(0).random(shape, dtype=np.float32)
    predictor = predict.Predictor(tmp_path)
    assert any(type(m).__name__ == "_OneDNNConv3d" for m in predictor.model.modules())
    with torch.no_grad():
        plain = torch.softmax(net(torch.from_numpy(sample)[None]), 1)[0].double().numpy()
    assert np.allclose(predictor.probabilities(sample), plain, rtol=0, atol=1e-6)
    found, cam, layer = predictor.explain(sample)
    assert found == predictor.predict(sample)
    assert cam.shape == shape[1:] and layer.startswith("features.")
