"""Load and validate ``params.yaml`` in one place.

Every stage reads its parameters through :func:`load` so that a typo in ``params.yaml`` (an
unknown key, a string where a number belongs, a value out of range) stops the stage with a
message naming the exact key, instead of silently falling back to a default.

Sections are frozen pydantic dataclasses (:mod:`oncopipe.core.settings`): strict types, ``Literal``
choices, ``Field`` ranges, ``extra="forbid"``; a section's ``__post_init__`` checks what
involves several fields. Dataset-specific sections (``demo`` and ``prepare``) are declared by
each dataset's contract (:class:`oncopipe.core.contract.DatasetSpec`), which the caller hands
in (the
registry's :func:`oncopipe.datasets.load_config` does), so this module imports nothing of the
datasets; the generic sections (``shard``, ``train``, ``evaluate``, ``export``,
``nnunet``) are declared here.

A stage names the keys it reads (``load(name, reads=...)``), the same keys its ``params:``
list in dvc.yaml declares (tests/test_stage_deps.py checks the two agree). Any other key of
the returned config raises :class:`UndeclaredParamError` when touched, so a stage cannot
depend on a param DVC does not know about, and :attr:`DatasetConfig.params_hash`, written
into the stage's outputs, covers exactly the declared keys: changing a training param
leaves the prepared data and the shards byte-identical.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import Field
from pydantic.dataclasses import dataclass

from oncopipe.core import limits as input_limits
from oncopipe.core.errors import ParamsError
from oncopipe.core.settings import (
    SETTINGS,
    Bool,
    Float,
    Int,
    NonNegFloat,
    NonNegInt,
    PosFloat,
    PosInt,
    Section,
    Str,
    validate,
)

if TYPE_CHECKING:
    from collections.abc import Collection

    from oncopipe.core.contract import DatasetSpec

PARAMS_FILE = Path("params.yaml")
# How a stage runs, not what it makes: left out of params_hash, so outputs are byte-identical
# whatever the number of worker processes or threads.
EXECUTION_KEYS = frozenset({"workers", "threads", "num_workers"})
SECTION_KEYS = ("raw", "task", "profile", "demo", "prepare", "shard", "train", "evaluate",
                "export", "nnunet")
DEFAULT_PROFILE = "demo"  # the train recipe of a dataset without ``profile``
# Keys at the top of params.yaml shared by every dataset; a stage lists them in ``reads`` as is
TOP_KEYS = ("seed", "limits")
Profile = Literal["demo", "reference"]


class UndeclaredParamError(AttributeError):
    """A stage touched a params key it did not declare (a programming error, not the user's)."""


# --------------------------------------------------------------------------------------------
# Generic sections, shared by every dataset.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, config=SETTINGS)
class ShardParams:
    """How the generic shard stage splits, balances and packs a dataset's manifest."""

    ratios: tuple[NonNegFloat, NonNegFloat, NonNegFloat] = (0.7, 0.15, 0.15)  # train, val, test
    balance: Literal["none", "undersample", "oversample"] = "none"
    shard_size: PosInt = 1024  # samples per HDF5 file
    compression: Literal["none", "lzf", "gzip"] = "none"  # per sample (one-sample chunks)
    class_weights: Bool = True  # with balance "none": weight the loss by inverse class frequency

    def __post_init__(self) -> None:
        if abs(sum(self.ratios) - 1.0) >= 1e-6:
            raise ValueError(f"ratios must sum to 1, got {self.ratios}")
        if self.ratios[0] <= 0:
            raise ValueError("ratios: the training split cannot be empty")


@dataclass(frozen=True, config=SETTINGS)
class AugmentParams:
    """On-the-fly augmentation; angles in degrees, shift/zoom as fractions of the size."""

    hflip: Bool = False
    vflip: Bool = False
    rotate_deg: Annotated[Float, Field(ge=0, le=180)] = 0.0
    rotate90: Bool = False
    shift: Annotated[Float, Field(ge=0, lt=0.5)] = 0.0
    zoom: Annotated[Float, Field(ge=0, lt=0.5)] = 0.0


@dataclass(frozen=True, config=SETTINGS)
class TrainParams:
    """One training recipe: model, optimiser, schedule, stopping, augmentation."""

    model: Literal[
        "resnet18", "resnet50", "resnet101", "vgg16", "inception_v3", "lenet5", "cnn7", "cnn3d"
    ] = "resnet50"
    width: PosFloat = 1.0  # channel multiplier for the small CNNs (lenet5, cnn7, cnn3d)
    input_size: NonNegInt = 0  # resize inputs (in-plane for volumes) to this side; 0 = as stored
    weights: Str = "none"  # none | torchvision weights name (e.g. IMAGENET1K_V2) | path to .pth
    # input normalisation in the model's adapter; auto = ImageNet mean/std for pretrained weights
    normalize: Literal["auto", "imagenet", "none"] = "auto"
    finetune: Literal["head", "whole"] = "whole"
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"
    lr: PosFloat = 1.0e-3
    momentum: NonNegFloat = 0.9
    weight_decay: NonNegFloat = 0.0
    batch_size: PosInt = 32
    epochs: PosInt = 10
    schedule: Literal["none", "exponential", "plateau", "cosine"] = "none"
    # exponential: lr * decay_rate ** (step // decay_steps)
    decay_rate: Annotated[Float, Field(gt=0, le=1)] = 0.96
    decay_steps: PosInt = 100000
    plateau_factor: Annotated[Float, Field(gt=0, lt=1)] = 0.5
    plateau_patience: NonNegInt = 3
    early_stopping_metric: Literal["val_loss", "val_accuracy", "val_balanced_accuracy"] = (
        "val_loss"
    )
    patience: PosInt = 15
    augment: Annotated[AugmentParams, Section] = field(default_factory=AugmentParams)
    # DataLoader workers; -1: chosen for the machine (oncopipe/learn/workers.py)
    num_workers: Annotated[Int, Field(ge=-1)] = -1
    threads: NonNegInt = 0  # torch CPU threads; 0 = torch's default
    amp: Bool = True  # bf16 autocast when CUDA is present; ignored on CPU
    deterministic: Bool = False  # GPU: deterministic algorithms, no cudnn.benchmark (CPU: always)
    nproc: PosInt = 1  # processes (GPUs) for DDP; > 1: the train stage re-executes under torchrun
    nnodes: PosInt = 1  # machines; > 1: torchrun with c10d rendezvous at $ONCOPIPE_RDZV
    # learning rate under a global batch of batch_size x processes: as given, or x processes
    lr_scaling: Literal["none", "linear"] = "none"


@dataclass(frozen=True, config=SETTINGS)
class EvaluateParams:
    """Test-split evaluation: bootstrap over patients and calibration binning."""

    bootstrap: NonNegInt = 1000  # resamples over patients for the confidence intervals
    ci: Annotated[Float, Field(gt=0, lt=1)] = 0.95
    calibration_bins: Annotated[Int, Field(gt=1)] = 10


ExportFormat = Literal["monai", "medmnist", "hf", "webdataset"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("monai", "medmnist", "hf", "webdataset")


@dataclass(frozen=True, config=SETTINGS)
class ExportParams:
    """Which formats the export stage writes (docs/exports.md) and MedMNIST's sizes."""

    formats: tuple[ExportFormat, ...] = EXPORT_FORMATS
    medmnist_sizes: tuple[Literal[28, 64, 128, 224], ...] = (28, 64)  # a size a dim lacks: skip

    def __post_init__(self) -> None:
        if len(set(self.formats)) != len(self.formats):
            raise ValueError("formats: a format is listed twice")


@dataclass(frozen=True, config=SETTINGS)
class NnunetParams:
    """The nnU-Net raw dataset of a dataset whose labels are several readers' contours."""

    # a voxel is in the label when at least this share of the lesion's readers include it
    consensus: Annotated[Float, Field(gt=0, le=1)] = 0.5


@dataclass(frozen=True, config=SETTINGS)
class TrainProfiles:
    """``demo`` is sized for the synthetic data on 2 CPU cores; ``reference`` is the paper's."""

    demo: Annotated[TrainParams, Section] = field(default_factory=TrainParams)
    reference: Annotated[TrainParams, Section] = field(default_factory=TrainParams)


# --------------------------------------------------------------------------------------------
# Whole-dataset section and the loader.
# --------------------------------------------------------------------------------------------


class _Undeclared:
    """Stands in for a params key the running stage did not declare: any use of it raises."""

    __slots__ = ("_key",)
    _key: str

    def __init__(self, key: str):
        object.__setattr__(self, "_key", key)

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise UndeclaredParamError(
            f"{self._key}: read by this stage but not declared (add it to the stage's reads "
            "and to its params: in dvc.yaml)")

    def __repr__(self) -> str:
        return f"<undeclared {self._key}>"

    __getattr__ = __getitem__ = __iter__ = __len__ = __bool__ = _fail
    __int__ = __index__ = __float__ = __str__ = __format__ = __fspath__ = _fail
    __eq__ = __lt__ = __le__ = __gt__ = __ge__ = __add__ = __radd__ = __sub__ = __mul__ = _fail
    __hash__ = None  # type: ignore[assignment]


class _Partial:
    """A section of which only some sub-keys are declared (``prepare.cohort``, ...)."""

    def __init__(self, obj: Any, key: str, allowed: frozenset[str]):
        self._obj, self._key, self._allowed = obj, key, allowed

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._allowed:
            return getattr(self._obj, name)
        sub = frozenset(a.split(".", 1)[1] for a in self._allowed if a.startswith(f"{name}."))
        if sub:
            return _Partial(getattr(self._obj, name), f"{self._key}.{name}", sub)
        return _Undeclared(f"{self._key}.{name}")._fail()


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """Everything a stage needs for one dataset, validated; undeclared keys guarded."""

    name: str
    seed: int
    raw: Path  # where the raw download (or the demo) lies
    task: str
    profile: str  # which train profile is active
    demo: Any  # dataset-specific dataclass
    prepare: Any  # dataset-specific dataclass
    shard: ShardParams
    train: TrainParams  # the active profile
    evaluate: EvaluateParams
    export: ExportParams = field(default_factory=ExportParams)
    nnunet: NnunetParams = field(default_factory=NnunetParams)
    limits: input_limits.Limits = input_limits.DEFAULT  # the top-level ``limits:`` section
    reads: tuple[str, ...] | None = None  # the declared keys; None: all (predict, tools)

    @property
    def params_hash(self) -> str:
        """Short hash of the declared params' values (defaults included), for provenance.

        Execution settings (:data:`EXECUTION_KEYS`) are left out: they change how fast a stage
        runs, never its bytes. Of ``limits``, only the values raised or lowered from their
        defaults count, so data prepared under the defaults keeps its hash.
        """
        keys = self.reads if self.reads is not None else ("seed", *SECTION_KEYS)
        values = {}
        for key in sorted(keys):
            if key == "limits":
                changed = {k: v for k, v in dataclasses.asdict(self.limits).items()
                           if v != getattr(input_limits.DEFAULT, k)}
                if changed:
                    values[key] = changed
                continue
            value: Any = self
            for part in key.split("."):
                value = object.__getattribute__(value, "_obj") if isinstance(value, _Partial) \
                    else value
                value = getattr(value, part)
            is_section = dataclasses.is_dataclass(value) and not isinstance(value, type)
            values[key] = _content(dataclasses.asdict(value)) if is_section else value
        blob = json.dumps({k: v for k, v in values.items()
                           if k.rsplit(".", 1)[-1] not in EXECUTION_KEYS},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _content(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` without :data:`EXECUTION_KEYS`, at any depth."""
    return {k: _content(v) if isinstance(v, dict) else v for k, v in d.items()
            if k not in EXECUTION_KEYS}


def read_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ParamsError(f"{path}: parameters file not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return data


def load(spec: DatasetSpec, known: Collection[str], path: Path = PARAMS_FILE,
         reads: tuple[str, ...] | None = None) -> DatasetConfig:
    """Read ``params.yaml`` and return the validated config of the dataset ``spec`` declares.

    ``known``: every registered dataset name (the other top-level keys allowed). ``reads``: the
    keys the calling stage declares in dvc.yaml, relative to the dataset's section
    (``prepare``, ``prepare.cohort``, ``train``...) plus the global ``seed`` and ``limits``;
    every other key is guarded (see the module docstring). ``None`` gives everything.
    """
    dataset = spec.name
    data = read_params(path)
    top = validate(_file_section(tuple(known)), data, "")
    limits = input_limits.from_params(top.limits)
    if not isinstance(data.get(dataset), dict):
        raise ParamsError(f"{dataset}: section missing from {path}")
    section = validate(_dataset_section(spec), data[dataset], dataset)
    values: dict[str, Any] = {
        "seed": top.seed,
        "raw": Path(section.raw),
        "task": section.task,
        "profile": section.profile,
        "demo": section.demo,
        "prepare": section.prepare,
        "shard": section.shard,
        "train": getattr(section.train, section.profile),
        "evaluate": section.evaluate,
        "export": section.export,
        "nnunet": section.nnunet,
        "limits": limits,
    }
    if reads is not None:
        values = _guard(dataset, values, reads)
    return DatasetConfig(name=dataset, reads=reads, **values)


@functools.cache
def _file_section(names: tuple[str, ...]) -> Any:
    """The top level of ``params.yaml``: ``seed``, ``limits``, ``datasets`` and one section per
    dataset (each validated only when a stage loads that dataset; ``limits`` by
    :func:`oncopipe.core.limits.from_params`)."""
    fields: list[Any] = [("seed", Int, 0),
                         ("limits", dict[str, Any] | None, None),
                         ("datasets", tuple[Literal[names], ...], ()),  # type: ignore[valid-type]
                         *((name, Any, None) for name in names)]
    return dataclass(dataclasses.make_dataclass("ParamsFile", fields, frozen=True),
                     frozen=True, config=SETTINGS)


def _dataset_section(spec: DatasetSpec) -> Any:
    """The ``<dataset>`` section, with that dataset's tasks and demo and prepare sections."""
    return _section_class(spec.name, spec.tasks, spec.demo_params, spec.prepare_params)


@functools.cache
def _section_class(name: str, tasks: tuple[str, ...], demo: type, prepare: type) -> Any:
    fields: list[Any] = [
        ("raw", Str),
        ("task", Literal[tasks]),  # type: ignore[valid-type]
        ("profile", Profile, DEFAULT_PROFILE),
        *((name, Annotated[cls, Section], field(default_factory=cls)) for name, cls in (
            ("demo", demo), ("prepare", prepare),
            ("shard", ShardParams), ("train", TrainProfiles), ("evaluate", EvaluateParams),
            ("export", ExportParams), ("nnunet", NnunetParams))),
    ]
    return dataclass(dataclasses.make_dataclass(f"{name}Section", fields, frozen=True),
                     frozen=True, config=SETTINGS)


def _guard(dataset: str, values: dict[str, Any], reads: tuple[str, ...]) -> dict[str, Any]:
    """Replace every key not in ``reads`` by a stand-in that raises when used."""
    for key in reads:
        if key.split(".", 1)[0] not in values:
            raise ValueError(f"reads: {key!r} is not a params key")  # programming error
    guarded = {}
    for name, value in values.items():
        where = name if name in TOP_KEYS else f"{dataset}.{name}"
        sub = frozenset(k.split(".", 1)[1] for k in reads if k.startswith(f"{name}."))
        if name in reads:
            guarded[name] = value
        elif sub:
            guarded[name] = _Partial(value, where, sub)
        else:
            guarded[name] = _Undeclared(where)
    return guarded
