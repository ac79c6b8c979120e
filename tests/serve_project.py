"""A small project folder for the web-app tests: params.yaml, models, pipeline outputs.

PCam goes through the real stages' code on a tiny demo (demo -> prepare -> shards -> train ->
evaluate), so the pipeline pages have every output to show. LIDC, MosMed and ISIC get a model
of the right input shape with random weights (their answers need only match the CLI's, and
ISIC must refuse what is not its JPEGs); BreakHis gets none, for "no model trained yet".
Inputs come from the demo generators: one PCam patch, one MosMed study, one LIDC series
folder, zipped as a user would upload it.
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import torch
import yaml

from oncopipe import datasets
from oncopipe.core import config, provenance
from oncopipe.core.cards import CodeVersion, ModelCard
from oncopipe.evaluate import evaluation
from oncopipe.learn import inference, models
from oncopipe.shard.shards import write_shards
from oncopipe.train import training

ROOT = Path(__file__).resolve().parents[1]
UNPACKED = 8 << 20  # limits.max_unpacked_bytes of the project: bombs need inflate only 8 MiB


@dataclasses.dataclass
class Project:
    root: Path
    params: Path
    pcam_image: Path
    mosmed_study: Path
    lidc_zip: Path
    lidc_folder: Path
    lidc_point: tuple[float, float, float]


def _params(root: Path) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name in datasets.NAMES:
        params[name]["raw"] = str(root / "data" / "demo" / name)
    params["pcam"]["demo"].update(n_train=40, n_test=2)
    params["pcam"]["prepare"]["workers"] = 1
    params["pcam"]["train"]["demo"].update(epochs=2, batch_size=16)
    params["pcam"]["evaluate"]["bootstrap"] = 50
    params["mosmed"]["demo"].update(studies=[2, 0, 0, 0, 0], masks=0, size=32, slices=[8, 10])
    params["mosmed"]["prepare"]["shape"] = [8, 32, 32]
    params["lidc"]["demo"].update(n_patients=8, rows=64, n_slices=16)
    params["limits"] = {"max_unpacked_bytes": UNPACKED}
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def random_model(model_dir: Path, cfg: config.DatasetConfig, sample_shape: tuple[int, ...]
                 ) -> None:
    """A model card and random weights, as the train stage would write them."""
    names = list(datasets.spec(cfg.name).class_names[cfg.task])
    torch.manual_seed(0)
    net = models.build(cfg.train, sample_shape, len(names))
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), model_dir / inference.MODEL_FILE)
    card = untrained_card(net, cfg.train, names, cfg.name, cfg.task)
    (model_dir / inference.CONFIG_FILE).write_text(card.to_json())


def untrained_card(net: models.Classifier, train: config.TrainParams, class_names: list[str],
                   dataset: str = "test", task: str = "binary") -> ModelCard:
    """The card the train stage writes, for a network that was not trained."""
    arch = net.architecture
    return ModelCard(dataset=dataset, task=task, profile="demo", seed=0,
                     class_names=tuple(class_names), sample_shape=arch.sample_shape,
                     layout="CHW" if len(arch.sample_shape) == 3 else "CDHW", dtype="<f4",
                     normalisation={}, shards_params_hash="", run="", best_epoch=0,
                     epochs_run=0, best_value=0.0, train=train, processes=1, architecture=arch,
                     raw=None, code=CodeVersion(**provenance.code_version()))


def build(root: Path, pipeline: bool = True) -> Project:
    """The project; ``pipeline=False``: PCam's model has random weights too and there are no
    pipeline outputs (for tests of the uploads alone, many seconds faster)."""
    params = _params(root)
    cfgs = {name: datasets.load_config(name, params) for name in ("pcam", "mosmed", "lidc")}
    for name, cfg in cfgs.items():
        datasets.spec(name).write_demo(cfg, cfg.raw)

    pcam = cfgs["pcam"]
    if pipeline:
        prepared, shards = root / "data/prepared/pcam", root / "data/shards/pcam"
        prepared.mkdir(parents=True)
        datasets.spec("pcam").prepare(pcam, prepared)
        write_shards(prepared, shards, pcam.shard, pcam.seed, pcam.params_hash,
                     provenance.raw_source("pcam", pcam.raw, prepared / "manifest.parquet"))
        training.train(pcam, shards, root / "models/pcam", root / "metrics/pcam/train")
        evaluation.evaluate(pcam, shards, root / "models/pcam", root / "metrics/pcam")
    else:
        random_model(root / "models/pcam", pcam, (3, 96, 96))

    mosmed = cfgs["mosmed"]
    random_model(root / "models/mosmed", mosmed, (1, *mosmed.prepare.shape))
    isic = datasets.load_config("isic", params)
    random_model(root / "models/isic", isic, (3, isic.prepare.size, isic.prepare.size))
    lidc = cfgs["lidc"]
    crop = lidc.prepare.crops
    random_model(root / "models/lidc", lidc, (1, crop.size_2d, crop.size_2d))

    series = sorted({p.parent for p in lidc.raw.rglob("*.dcm")})[0]
    lidc_zip = root / "series.zip"
    with zipfile.ZipFile(lidc_zip, "w") as zf:
        for f in sorted(series.glob("*.dcm")):
            zf.write(f, f"{series.name}/{f.name}")
    _, geometry = datasets.spec("lidc").view(lidc, series)
    (x0, x1), (y0, y1), _ = geometry["extent_mm"]
    point = ((x0 + x1) / 2, (y0 + y1) / 2, geometry["zs"][len(geometry["zs"]) // 2])
    return Project(root=root, params=params,
                   pcam_image=sorted((pcam.raw / "train").glob("*.tif"))[0],
                   mosmed_study=sorted(mosmed.raw.rglob("*.nii.gz"))[0],
                   lidc_zip=lidc_zip, lidc_folder=series, lidc_point=point)
