"""The dataset contract holds for every registered dataset: every part declared, of its type,
with the signature the generic code calls it with; declaring a dataset imports none of its
processing code; a spec with a part missing or mistyped cannot be built."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from oncopipe import datasets
from oncopipe.core.contract import LAZY_PARTS, DatasetSpec, Lazy, PredictInput
from oncopipe.serve.app import Settings, create_app

ROOT = Path(__file__).resolve().parents[1]
SIGNATURES = {  # part -> (parameter names, defaults) the generic code relies on
    "write_demo": (["cfg", "out_dir"], {}),
    "prepare": (["cfg", "out_dir"], {}),
    "preprocess_one": (["cfg", "path", "point"], {"point": None}),
    "view": (["cfg", "path"], {}),
    "input_on_view": (["cfg", "geometry", "point", "cam"], {}),
}


@pytest.mark.parametrize("name", datasets.NAMES)
def test_every_field_is_declared_with_its_type(name):
    spec = datasets.spec(name)
    assert isinstance(spec, DatasetSpec) and spec.name == name
    assert set(spec.tasks) == set(spec.class_names) and spec.tasks
    for task, classes in spec.class_names.items():
        assert isinstance(task, str) and isinstance(classes, tuple) and len(classes) >= 2
        assert len(set(classes)) == len(classes), f"{name}.{task}: repeated class name"
    p = spec.predict_input
    assert isinstance(p, PredictInput) and p.kind in ("image", "volume", "series")
    assert p.suffixes and all(s.startswith(".") for s in p.suffixes) and p.expected
    cfg = datasets.load_config(name, ROOT / "params.yaml")
    assert isinstance(cfg.demo, spec.demo_params) and isinstance(cfg.demo.seed, int)
    assert isinstance(cfg.prepare, spec.prepare_params)
    assert cfg.task in spec.tasks


@pytest.mark.parametrize("name", datasets.NAMES)
def test_every_part_resolves_to_the_dataset_own_function(name):
    spec = datasets.spec(name)
    parts = spec.parts()
    assert set(parts) >= {"write_demo", "prepare", "preprocess_one"}
    if spec.predict_input.point:
        assert "view" in parts, f"{name}: a point is picked on the input's view"
    for part, lazy in parts.items():
        assert isinstance(lazy, Lazy)
        assert lazy.module.startswith(f"oncopipe.datasets.{name}."), \
            f"{name}.{part}: {lazy.module} is not the dataset's own code"
        fn = lazy.resolve()
        assert callable(fn)
        names, defaults = SIGNATURES[part]
        params = inspect.signature(fn).parameters
        assert list(params) == names, f"{name}.{part}{inspect.signature(fn)}"
        for arg, default in defaults.items():
            assert params[arg].default is default, f"{name}.{part}: {arg} must default to None"


def test_declaring_every_dataset_imports_no_processing_code():
    code = ("import sys\nfrom oncopipe import datasets\n"
            "[datasets.spec(n) for n in datasets.NAMES]\n"
            "print('\\n'.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    loaded = done.stdout.split()
    ours = {m for m in loaded if m.startswith("oncopipe.datasets.")}
    assert ours == {f"oncopipe.datasets.{n}{s}" for n in datasets.NAMES for s in ("", ".params")}
    assert not {"torch", "cv2", "pydicom", "nibabel", "h5py"} & set(loaded)


def _fields(**changes):
    spec = datasets.spec("pcam")
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not ...}


@pytest.mark.parametrize(("changes", "message"), [
    ({"predict_input": ...}, "predict_input"),  # left out
    ({"preprocess_one": ...}, "preprocess_one"),
    ({"predict_input": {"kind": "image"}}, "predict_input must be a PredictInput"),
    ({"prepare": print}, "prepare must be a Lazy"),
    ({"class_names": {"binary": ("only",)}}, "class_names must be"),
    ({"demo_params": None}, "demo_params must be a settings class"),
    ({"class_descriptions": {"negative": "no tumour"}}, r"missing: \['positive'\]"),
    ({"class_descriptions": {"negative": "", "positive": "tumour"}}, "class_descriptions must"),
    ({"predict_input": PredictInput("series", (".dcm",), ("DICOM",), "a series", point=True)},
     "view must be a Lazy"),
])
def test_a_spec_with_a_part_missing_or_mistyped_cannot_be_built(changes, message):
    with pytest.raises(TypeError, match=message):
        DatasetSpec(**_fields(**changes))


def test_the_lazy_parts_are_the_declared_fields():
    names = {f.name for f in dataclasses.fields(DatasetSpec)}
    assert set(LAZY_PARTS) <= names and set(SIGNATURES) == set(LAZY_PARTS)


def test_the_api_lists_every_registered_dataset(tmp_path):
    with TestClient(create_app(Settings(root=tmp_path)), base_url="http://127.0.0.1") as client:
        answer = client.get("/api/datasets")
    assert answer.status_code == 200
    listing = {d["name"]: d for d in answer.json()}
    assert list(listing) == list(datasets.NAMES)
    for name, entry in listing.items():
        p = datasets.spec(name).predict_input
        assert (entry["kind"], entry["expected"], entry["point"]) == (p.kind, p.expected, p.point)
        assert entry["model"] is None  # no models/ in an empty project
