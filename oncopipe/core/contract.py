"""The dataset contract: what one dataset declares, in one typed record, :class:`DatasetSpec`.

Each dataset package declares ``SPEC = DatasetSpec(...)`` in its ``__init__.py`` and the
registry (:mod:`oncopipe.datasets`) resolves a name to it; the generic stages, ``oncopipe
predict`` and ``oncopipe serve`` use a dataset only through its spec, never through module
attributes looked up by name. ``DatasetSpec`` checks its fields when it is built, so a dataset
that leaves a part out fails on import (and in tests/test_contract.py), not in the middle of
a request.

The processing parts (``write_demo``, ``prepare``, ``preprocess_one``, ``view``) are
:class:`Lazy` references, named but not imported: declaring a dataset, which every stage does
when it loads params, imports its ``params`` module and nothing of its readers, so each
stage's import closure (and with it its DVC code deps) stays what it runs.

This module imports nothing of ``oncopipe`` at run time: settings and the registry sit above it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np

    from oncopipe.core.config import DatasetConfig

Point = tuple[float, float, float]  # a point in patient mm (x, y, z)


@dataclass(frozen=True)
class PredictInput:
    """What ``oncopipe predict`` and ``oncopipe serve`` take as one input of a dataset, so both
    refuse what does not belong with one sentence."""

    kind: Literal["image", "volume", "series"]  # series: a folder of DICOM slices, zipped to upload
    suffixes: tuple[str, ...]  # file suffixes of the raw release
    formats: tuple[str, ...]  # as oncopipe.imagefiles.images.image_format names them
    expected: str  # the words that say what belongs, for the error message
    point: bool = False  # whether a point in patient mm goes with the input
    min_side: int = 0  # images: a shorter side below this (pixels) is not the release's


@dataclass(frozen=True)
class Provenance:
    """The release as its provider states it (docs/data.md), for the data card."""

    release: str
    page: str
    licence: str
    citation: str
    not_for: tuple[str, ...]  # what the data must not be used for, beyond "not a diagnosis"


class WriteDemo(Protocol):
    """Synthetic data in the release's raw layout from ``cfg.demo``; same seed, same bytes."""

    def __call__(self, cfg: DatasetConfig, out_dir: Path) -> None: ...


class Prepare(Protocol):
    """Raw data at ``cfg.raw`` -> the common manifest and arrays in ``out_dir`` (a scratch
    folder), with ``rejects.parquet``, ``report.json`` and ``contact_sheet.png``."""

    def __call__(self, cfg: DatasetConfig, out_dir: Path) -> None: ...


class PreprocessOne(Protocol):
    """One raw input exactly as ``prepare`` stores it, in the manifest's array layout."""

    def __call__(self, cfg: DatasetConfig, path: Path, point: Point | None = None
                 ) -> np.ndarray: ...


class View(Protocol):
    """One raw input as a person looks through it: the whole volume in HU as int16 (D, H, W)
    with D increasing towards the head, H towards the back, W towards the patient's left, and
    its geometry: ``spacing_mm`` (D, H, W) and, for inputs that take a point, what maps a
    voxel to patient mm (``origin_xy``, ``spacing_xy``, ``zs``, ``extent_mm``);
    ``model_input: "whole volume"`` where the model's input is this volume resampled, so its
    Grad-CAM map is drawn over it."""

    def __call__(self, cfg: DatasetConfig, path: Path) -> tuple[np.ndarray, dict]: ...


class InputOnView(Protocol):
    """Where the model's input for ``point`` lies on the view whose ``geometry`` :class:`View`
    returned, and its Grad-CAM map ``cam`` (the sample's spatial grid) as one axial plane:
    ``{"slice": k, "rect": [top, left, bottom, right], "visible": [...], "map": (h, w) in
    [0, 1]}``, rectangles in the slice's continuous pixel index (pixel centres at integers),
    ``visible`` the part of ``rect`` on the slice. For inputs that are a part of the view
    (a crop around the point), so the page draws the map where that part lies."""

    def __call__(self, cfg: DatasetConfig, geometry: dict, point: Point, cam: np.ndarray
                 ) -> dict: ...


@dataclass(frozen=True)
class Lazy:
    """Function ``name`` of module ``module``, imported on first call (see the module doc)."""

    module: str
    name: str

    def resolve(self) -> Callable[..., Any]:
        return getattr(importlib.import_module(self.module), self.name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)


LAZY_PARTS = ("write_demo", "prepare", "preprocess_one", "view", "input_on_view")
OPTIONAL_PARTS = ("view", "input_on_view")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset, declared: its tasks and classes, its settings, what one prediction takes,
    and its processing parts.

    - ``class_names``: task -> class names (the tasks are its keys, the accepted values of
      ``<ds>.task`` in params.yaml).
    - ``demo_params``, ``prepare_params``: the settings classes of the ``<ds>.demo`` and
      ``<ds>.prepare`` sections (``demo_params`` has ``seed: int``).
    - ``provenance``: the release, its licence and citation, as docs/data.md states them.
    - ``view``: optional; datasets whose input takes a point (``predict_input.point``) have
      one, so ``oncopipe serve`` can show the input to pick the point on; volumes may have
      one, to be looked through slice by slice.
    - ``input_on_view``: optional; where the model's input (a crop around the point) lies on
      the view, so its Grad-CAM map is drawn there over the scan.
    - ``class_descriptions``: class name -> one sentence a clinician understands (what the
      class means in this release, e.g. which region of the patch a label looks at); when
      given, every class of every task has one. ``oncopipe serve`` shows them beside the
      answer.
    """

    name: str
    class_names: Mapping[str, tuple[str, ...]]
    predict_input: PredictInput
    demo_params: type
    prepare_params: type
    write_demo: WriteDemo
    prepare: Prepare
    preprocess_one: PreprocessOne
    view: View | None = None
    input_on_view: InputOnView | None = None
    provenance: Provenance | None = None  # the data card's release, licence and citation
    class_descriptions: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        def fail(field: str, wanted: str) -> None:
            raise TypeError(f"dataset {self.name!r}: {field} must be {wanted}, got "
                            f"{getattr(self, field)!r}")

        if not isinstance(self.name, str) or not self.name.isidentifier():
            fail("name", "an identifier")
        if not (isinstance(self.class_names, Mapping) and self.class_names
                and all(isinstance(t, str) and isinstance(c, tuple) and len(c) >= 2
                        and all(isinstance(n, str) for n in c)
                        for t, c in self.class_names.items())):
            fail("class_names", "a non-empty mapping of task -> tuple of >= 2 class names")
        if not isinstance(self.predict_input, PredictInput):
            fail("predict_input", "a PredictInput")
        for field in ("demo_params", "prepare_params"):
            if not isinstance(getattr(self, field), type):
                fail(field, "a settings class")
        for field in LAZY_PARTS:
            value = getattr(self, field)
            if field in OPTIONAL_PARTS and value is None:
                continue
            if not isinstance(value, Lazy):
                fail(field, "a Lazy reference into the dataset's package")
        described = self.class_descriptions
        if not (isinstance(described, Mapping) and all(
                isinstance(k, str) and isinstance(v, str) and v.strip()
                for k, v in described.items())):
            fail("class_descriptions", "a mapping of class name -> one sentence")
        undescribed = sorted({c for names in self.class_names.values() for c in names}
                             - set(described)) if described else []
        if undescribed:
            fail("class_descriptions", f"a sentence for every class (missing: {undescribed})")
        if self.predict_input.point and self.view is None:
            fail("view", "a Lazy reference (the input takes a point, picked on its view)")
        if self.input_on_view is not None and self.view is None:
            fail("view", "a Lazy reference (input_on_view places the input on the view)")

    @classmethod
    def of_package(cls, package: str, params: ModuleType, view: str | None = None,
                   input_on_view: str | None = None) -> DatasetSpec:
        """The declaration every dataset package makes: ``params`` names the classes
        (``CLASS_NAMES``) and what they mean (``CLASS_DESCRIPTIONS``), the input
        (``PREDICT_INPUT``), the settings (``DemoParams``, ``PrepareParams``) and the release
        (``PROVENANCE``); the parts are ``demo.write_demo``, ``prepare.prepare``,
        ``prepare.preprocess_one`` and, when named, ``prepare.<view>`` and
        ``prepare.<input_on_view>``."""
        return cls(name=package.rsplit(".", 1)[-1], class_names=params.CLASS_NAMES,
                   class_descriptions=params.CLASS_DESCRIPTIONS,
                   predict_input=params.PREDICT_INPUT, demo_params=params.DemoParams,
                   prepare_params=params.PrepareParams, provenance=params.PROVENANCE,
                   write_demo=Lazy(f"{package}.demo", "write_demo"),
                   prepare=Lazy(f"{package}.prepare", "prepare"),
                   preprocess_one=Lazy(f"{package}.prepare", "preprocess_one"),
                   view=Lazy(f"{package}.prepare", view) if view else None,
                   input_on_view=(Lazy(f"{package}.prepare", input_on_view) if input_on_view
                                  else None))

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.class_names)

    def parts(self) -> dict[str, Lazy]:
        """The processing parts it declares (the optional ones only when present)."""
        return {f: getattr(self, f) for f in LAZY_PARTS if getattr(self, f) is not None}

