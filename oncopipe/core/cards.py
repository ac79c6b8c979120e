"""What the shard, train and evaluate stages record beside their outputs, typed:
``summary.json`` of the shards, ``config.json`` of a model (the model card's training record)
and ``modelcard.json`` (that record with the evaluation, written by evaluate).

Readers get attributes checked when the file is read, not string keys that fail later; a file
that does not match (written by another version, edited by hand) is refused with the key path
and the stage to rerun. Both are written with sorted keys and two-space indents, so the bytes
depend only on the values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer, model_validator
from pydantic.functional_serializers import SerializerFunctionWrapHandler

from oncopipe.core.config import TrainParams
from oncopipe.core.errors import InputError, ModelError
from oncopipe.core.settings import one_line

SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"
MODEL_CARD_JSON = "modelcard.json"
MODEL_CARD_MD = "MODELCARD.md"

R = TypeVar("R", bound="_Record")


@dataclass(frozen=True)
class Architecture:
    """Every setting that shapes the network, resolved; the record in config.json.

    Weights are not part of it: they initialise the network (training) or replace its state
    (:func:`oncopipe.learn.inference.load_model`), but never change its structure or its arithmetic.
    """

    model: str
    sample_shape: tuple[int, ...]
    n_classes: int
    width: float = 1.0
    finetune: Literal["head", "whole"] = "whole"
    input_size: int = 0  # resolved: Inception-v3's default 299 is written out
    mean: tuple[float, ...] = ()  # input normalisation in the adapter; empty: none
    std: tuple[float, ...] = ()
    transform_input: bool = False  # torchvision Inception-v3's own input transform
    aux_logits: bool = False  # Inception-v3's auxiliary classifier (trained with finetune whole)


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_json(self) -> str:
        """The file's text: sorted keys, two-space indents, a final newline."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"

    @classmethod
    def _read(cls: type[R], path: Path, error: type[InputError], rerun: str) -> R:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (did the {rerun} stage run?)")
        try:
            return cls.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            raise error(f"{path}: not as this oncopipe writes it "
                        f"({one_line(exc, cls, '')}); rerun the {rerun} stage") from None


class RawSource(_Record):
    """Where the raw data came from (:func:`oncopipe.core.provenance.raw_source`)."""

    source: Literal["demo", "real"]
    path: str
    manifest_sha256: str


class CodeVersion(_Record):
    """The package version, and where each stage's code is recorded
    (:func:`oncopipe.core.provenance.code_version`)."""

    version: str
    files: str


class SplitSummary(_Record):
    samples: int  # rows, oversampled copies included
    unique_samples: int
    patients: int
    class_counts: dict[str, int]


class ShardSummary(_Record):
    """``data/shards/<dataset>/summary.json``: what the shards hold and how they were split."""

    dataset: str
    task: str
    class_names: tuple[str, ...]
    layout: str  # axes of one sample: CHW, CDHW
    sample_shape: tuple[int, ...]
    dtype: str  # numpy's dtype string, e.g. <f2
    normalisation: dict[str, Any]  # the prepare stage's record of how values were scaled
    patient_level: bool
    params_hash: str  # of the prepare and shard params, chained
    manifest_samples: int
    balance: str
    class_weights: list[float] | None
    duplicate_links: int
    compression: str
    shards: tuple[str, ...]
    splits: dict[str, SplitSummary]
    raw: RawSource | None = None  # absent from the file when the shard stage was not given it

    @model_serializer(mode="wrap")
    def _raw_if_known(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if out.get("raw") is None:
            out.pop("raw", None)
        return out

    @classmethod
    def read(cls, shard_dir: Path) -> ShardSummary:
        return cls._read(Path(shard_dir) / SUMMARY_FILE, InputError, "shard")


class ModelCard(_Record):
    """``models/<dataset>/config.json``: what the model was trained on, how, and its network.

    ``best_value`` is written as ``best_<early_stopping_metric>`` (``best_val_loss``...).
    """

    dataset: str
    task: str
    profile: str
    seed: int
    class_names: tuple[str, ...]
    sample_shape: tuple[int, ...]
    layout: str
    dtype: str
    normalisation: dict[str, Any]
    shards_params_hash: str  # the ShardSummary.params_hash of the shards it was trained on
    run: str  # hash of the train params, seed and shards: the resume key
    best_epoch: int  # 1-based
    epochs_run: int
    best_value: float
    train: TrainParams
    processes: int
    architecture: Architecture
    raw: RawSource | None  # the shards' record of the raw data (null if they had none)
    code: CodeVersion

    @model_validator(mode="before")
    @classmethod
    def _best_from_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("train"), dict):
            key = f"best_{data['train'].get('early_stopping_metric')}"
            if key in data:
                data = {k: v for k, v in data.items() if k != key} | {"best_value": data[key]}
        return data

    @model_serializer(mode="wrap")
    def _best_to_file(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        out[f"best_{self.train.early_stopping_metric}"] = out.pop("best_value")
        return out

    @classmethod
    def read(cls, model_dir: Path) -> ModelCard:
        return cls._read(Path(model_dir) / CONFIG_FILE, ModelError, "train")


class Figure(_Record):
    """One test figure of metrics.json with its interval (``ci.<name>``) and its n."""

    value: float | None
    low: float | None
    high: float | None
    n: int
    n_patients: int
    n_eff: float | None
    small_n: bool


class KeptEpoch(_Record):
    epoch: int  # 1-based, of epochs_run
    epochs_run: int
    chosen_on: Literal["val"]
    metric: str  # the early-stopping metric (val_balanced_accuracy...)
    value: float


class TrainingData(_Record):
    data_card: str  # the data card of the prepared data, relative to the project
    data_source: str | None  # the raw folder the shards record (None: unknown)
    manifest_sha256: str | None  # the manifest the shards were made from
    shards_params_hash: str
    train_samples: int  # in the training shards, oversampled copies included
    val_samples: int
    test_samples: int


class EvaluatedModelCard(_Record):
    """``models/<dataset>/modelcard.json``: the :class:`ModelCard` of ``config.json`` (what
    was trained, how, on what) with the test figures, calibration and operating point of
    ``metrics/<dataset>/metrics.json`` and what the model may and may not be used for.

    Every figure is a copy of metrics.json's (``metrics`` names the file), never recomputed.
    """

    title: str
    demo: bool  # trained on the synthetic demo (or on data of unknown source): not a real model
    weights_origin: str
    training_data: TrainingData
    kept_epoch: KeptEpoch
    metrics: str  # the metrics.json the figures come from, relative to the project
    ci_level: float
    ci_method: str
    n_test: int
    n_test_patients: int
    test: dict[str, Figure]
    calibration: Figure  # the expected calibration error on the test split
    calibration_bins: int
    operating_point: dict[str, Any] | None  # metrics.json's, chosen on val
    intended_use: str
    not_for: tuple[str, ...]
    limitations: tuple[str, ...]
    model: ModelCard  # config.json, as the train stage wrote it

    @classmethod
    def read(cls, model_dir: Path) -> EvaluatedModelCard:
        return cls._read(Path(model_dir) / MODEL_CARD_JSON, ModelError, "evaluate")
