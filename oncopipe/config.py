"""Load and validate ``params.yaml`` in one place.

Every stage reads its parameters through :func:`load` so that a typo in ``params.yaml`` (an
unknown key, a string where a number belongs, a value out of range) stops the stage with a
message naming the exact key, instead of silently falling back to a default.

Sections are plain frozen dataclasses. :func:`build` turns a YAML mapping into one, checking
keys and types recursively; a dataclass may define ``check(self) -> None`` raising
``ValueError`` for constraints between fields (the message is prefixed with the key path).
Dataset-specific sections (``demo`` and ``prepare``) are declared by each dataset's
contract (:class:`oncopipe.contract.DatasetSpec`), which the caller hands in (the registry's
:func:`oncopipe.datasets.load_config` does), so this module imports nothing of the datasets;
the generic sections (``shard``, ``train``, ``evaluate``, ``export``) are declared here.

A stage names the keys it reads (``load(name, reads=...)``), the same keys its ``params:``
list in dvc.yaml declares (tests/test_stage_deps.py checks the two agree). Any other key of
the returned config raises :class:`UndeclaredParamError` when touched, so a stage cannot
depend on a param DVC does not know about, and :attr:`DatasetConfig.params_hash`, written
into the stage's outputs, covers exactly the declared keys: changing a training param
leaves the prepared data and the shards byte-identical.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from oncopipe import limits as input_limits
from oncopipe.errors import ParamsError

if TYPE_CHECKING:
    from collections.abc import Collection

    from oncopipe.contract import DatasetSpec

PARAMS_FILE = Path("params.yaml")
# How a stage runs, not what it makes: left out of params_hash, so outputs are byte-identical
# whatever the number of worker processes or threads.
EXECUTION_KEYS = frozenset({"workers", "threads", "num_workers"})
SECTION_KEYS = ("raw", "task", "profile", "demo", "prepare", "shard", "train", "evaluate",
                "export")
DEFAULT_PROFILE = "demo"  # the train recipe of a dataset without ``profile``
# Keys at the top of params.yaml shared by every dataset; a stage lists them in ``reads`` as is
TOP_KEYS = ("seed", "limits")


class UndeclaredParamError(AttributeError):
    """A stage touched a params key it did not declare (a programming error, not the user's)."""


# --------------------------------------------------------------------------------------------
# Generic builder: YAML mapping -> frozen dataclass, strict about keys and types.
# --------------------------------------------------------------------------------------------


def build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from ``data``; ``where`` is the key path used in messages."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ParamsError(
            f"{where}.{unknown[0]}: unknown key (allowed: {', '.join(sorted(known))})"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in known.items():
        key = f"{where}.{name}"
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ParamsError(f"{key}: required key is missing")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            check()
        except ValueError as exc:
            raise ParamsError(f"{where}: {exc}") from None
    return obj


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, key)
            except ParamsError as exc:
                errors.append(str(exc))
        raise ParamsError(errors[0] if len(errors) == 1 else f"{key}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ParamsError(f"{key}: expected {len(args)} values, got {len(value)}")
            pairs = enumerate(zip(args, value, strict=True))
            items = [_coerce(a, v, f"{key}[{i}]") for i, (a, v) in pairs]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ParamsError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ParamsError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{key}: unsupported parameter type {tp!r}")  # programming error


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


# --------------------------------------------------------------------------------------------
# Generic sections, shared by every dataset.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardParams:
    """How the generic shard stage splits, balances and packs a dataset's manifest."""

    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train, val, test (by patient)
    balance: Literal["none", "undersample", "oversample"] = "none"
    shard_size: int = 1024  # samples per HDF5 file
    compression: Literal["none", "lzf", "gzip"] = "none"  # per sample (one-sample chunks)
    class_weights: bool = True  # with balance "none": weight the loss by inverse class frequency

    def check(self) -> None:
        _require(all(r >= 0 for r in self.ratios), "ratios must be >= 0")
        _require(abs(sum(self.ratios) - 1.0) < 1e-6, f"ratios must sum to 1, got {self.ratios}")
        _require(self.ratios[0] > 0, "ratios: the training split cannot be empty")
        _require(self.shard_size > 0, "shard_size must be > 0")


@dataclass(frozen=True)
class AugmentParams:
    """On-the-fly augmentation; angles in degrees, shift/zoom as fractions of the size."""

    hflip: bool = False
    vflip: bool = False
    rotate_deg: float = 0.0
    rotate90: bool = False
    shift: float = 0.0
    zoom: float = 0.0

    def check(self) -> None:
        _require(0 <= self.rotate_deg <= 180, "rotate_deg must be in [0, 180]")
        _require(0 <= self.shift < 0.5, "shift must be in [0, 0.5)")
        _require(0 <= self.zoom < 0.5, "zoom must be in [0, 0.5)")


@dataclass(frozen=True)
class TrainParams:
    """One training recipe: model, optimiser, schedule, stopping, augmentation."""

    model: Literal[
        "resnet18", "resnet50", "resnet101", "vgg16", "inception_v3", "lenet5", "cnn7", "cnn3d"
    ] = "resnet50"
    width: float = 1.0  # channel multiplier for the small CNNs (lenet5, cnn7, cnn3d)
    input_size: int = 0  # resize 2D inputs to this side before the model; 0 = as stored
    weights: str = "none"  # none | torchvision weights name (e.g. IMAGENET1K_V2) | path to .pth
    # input normalisation in the model's adapter; auto = ImageNet mean/std for pretrained weights
    normalize: Literal["auto", "imagenet", "none"] = "auto"
    finetune: Literal["head", "whole"] = "whole"
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"
    lr: float = 1.0e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 10
    schedule: Literal["none", "exponential", "plateau", "cosine"] = "none"
    decay_rate: float = 0.96  # exponential: lr * decay_rate ** (step // decay_steps)
    decay_steps: int = 100000
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    early_stopping_metric: Literal["val_loss", "val_accuracy", "val_balanced_accuracy"] = (
        "val_loss"
    )
    patience: int = 15
    augment: AugmentParams = field(default_factory=AugmentParams)
    num_workers: int = -1  # DataLoader workers; -1: chosen for the machine (oncopipe/workers.py)
    threads: int = 0  # torch CPU threads; 0 = torch's default
    amp: bool = True  # bf16 autocast when CUDA is present; ignored on CPU
    deterministic: bool = False  # GPU: deterministic algorithms, no cudnn.benchmark (CPU: always)
    nproc: int = 1  # processes (GPUs) for DDP; > 1: the train stage re-executes under torchrun

    def check(self) -> None:
        _require(self.lr > 0, "lr must be > 0")
        _require(self.batch_size > 0, "batch_size must be > 0")
        _require(self.epochs > 0, "epochs must be > 0")
        _require(self.width > 0, "width must be > 0")
        _require(self.patience > 0, "patience must be > 0")
        _require(self.num_workers >= -1, "num_workers must be >= 0, or -1 (auto)")
        _require(self.threads >= 0, "threads must be >= 0")
        _require(self.nproc >= 1, "nproc must be >= 1")
        _require(self.input_size >= 0, "input_size must be >= 0")
        _require(self.momentum >= 0, "momentum must be >= 0")
        _require(self.weight_decay >= 0, "weight_decay must be >= 0")
        _require(0 < self.plateau_factor < 1, "plateau_factor must be in (0, 1)")
        _require(self.plateau_patience >= 0, "plateau_patience must be >= 0")
        _require(0 < self.decay_rate <= 1, "decay_rate must be in (0, 1]")
        _require(self.decay_steps > 0, "decay_steps must be > 0")


@dataclass(frozen=True)
class EvaluateParams:
    """Test-split evaluation: bootstrap over patients and calibration binning."""

    bootstrap: int = 1000  # resamples over patients for the confidence intervals
    ci: float = 0.95
    calibration_bins: int = 10

    def check(self) -> None:
        _require(self.bootstrap >= 0, "bootstrap must be >= 0")
        _require(0 < self.ci < 1, "ci must be in (0, 1)")
        _require(self.calibration_bins > 1, "calibration_bins must be > 1")


EXPORT_FORMATS = ("monai", "medmnist", "hf", "webdataset")


@dataclass(frozen=True)
class ExportParams:
    """Which formats the export stage writes (docs/exports.md) and MedMNIST's sizes."""

    formats: tuple[str, ...] = EXPORT_FORMATS
    medmnist_sizes: tuple[int, ...] = (28, 64)  # sizes a dimension lacks are skipped

    def check(self) -> None:
        unknown = sorted(set(self.formats) - set(EXPORT_FORMATS))
        _require(not unknown, f"formats: unknown {unknown} (known: {', '.join(EXPORT_FORMATS)})")
        _require(len(set(self.formats)) == len(self.formats), "formats: listed twice")
        _require(all(s in (28, 64, 128, 224) for s in self.medmnist_sizes),
                 "medmnist_sizes: each one of 28, 64, 128, 224")


@dataclass(frozen=True)
class TrainProfiles:
    """``demo`` is sized for the synthetic data on 2 CPU cores; ``reference`` is the paper's."""

    demo: TrainParams = field(default_factory=TrainParams)
    reference: TrainParams = field(default_factory=TrainParams)


# --------------------------------------------------------------------------------------------
# Whole-dataset section and the loader.
# --------------------------------------------------------------------------------------------


class _Undeclared:
    """Stands in for a params key the running stage did not declare: any use of it raises."""

    __slots__ = ("_key",)

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


@dataclass(frozen=True)
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
            values[key] = _content(dataclasses.asdict(value)) \
                if dataclasses.is_dataclass(value) else value
        blob = json.dumps({k: v for k, v in values.items()
                           if k.rsplit(".", 1)[-1] not in EXECUTION_KEYS},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _content(d: dict) -> dict:
    """``d`` without :data:`EXECUTION_KEYS`, at any depth."""
    return {k: _content(v) if isinstance(v, dict) else v for k, v in d.items()
            if k not in EXECUTION_KEYS}


def read_params(path: Path = PARAMS_FILE) -> dict:
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
    allowed_top = {*TOP_KEYS, "datasets", *known}
    unknown = sorted(set(data) - allowed_top)
    if unknown:
        raise ParamsError(f"{unknown[0]}: unknown top-level key in {path}")
    seed = _coerce(int, data.get("seed", 0), "seed")
    raw_limits = data.get("limits")
    if raw_limits is not None and not isinstance(raw_limits, dict):
        raise ParamsError(f"limits: expected a mapping, got {type(raw_limits).__name__}")
    limits = input_limits.from_params(raw_limits)
    listed = _coerce(list[str], data.get("datasets", []), "datasets")
    for i, name in enumerate(listed):
        if name not in known:
            raise ParamsError(f"datasets[{i}]: unknown dataset {name!r}")
    section = data.get(dataset)
    if not isinstance(section, dict):
        raise ParamsError(f"{dataset}: section missing from {path}")

    unknown = sorted(set(section) - set(SECTION_KEYS))
    if unknown:
        raise ParamsError(
            f"{dataset}.{unknown[0]}: unknown key (allowed: {', '.join(sorted(SECTION_KEYS))})"
        )
    for key in ("raw", "task"):
        if key not in section:
            raise ParamsError(f"{dataset}.{key}: required key is missing")
    raw = _coerce(str, section["raw"], f"{dataset}.raw")
    task = _coerce(str, section["task"], f"{dataset}.task")
    if task not in spec.tasks:
        raise ParamsError(f"{dataset}.task: {task!r} is not one of {', '.join(spec.tasks)}")
    profile = _coerce(Literal["demo", "reference"], section.get("profile", DEFAULT_PROFILE),
                      f"{dataset}.profile")
    profiles = build(TrainProfiles, section.get("train"), f"{dataset}.train")
    values: dict[str, Any] = {
        "seed": seed,
        "raw": Path(raw),
        "task": task,
        "profile": profile,
        "demo": build(spec.demo_params, section.get("demo"), f"{dataset}.demo"),
        "prepare": build(spec.prepare_params, section.get("prepare"), f"{dataset}.prepare"),
        "shard": build(ShardParams, section.get("shard"), f"{dataset}.shard"),
        "train": getattr(profiles, profile),
        "evaluate": build(EvaluateParams, section.get("evaluate"), f"{dataset}.evaluate"),
        "export": build(ExportParams, section.get("export"), f"{dataset}.export"),
        "limits": limits,
    }
    if reads is not None:
        values = _guard(dataset, values, reads)
    return DatasetConfig(name=dataset, reads=reads, **values)


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
