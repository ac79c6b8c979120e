"""A sixth dataset added by following docs/architecture.md's recipe, in a copy of the project,
runs demo -> prepare -> shard -> train -> evaluate with the real ``dvc repro`` and predicts one
file with ``oncopipe predict``.

The toy dataset, ``ddsm`` (the recipe's example), is tests/data/sixth_dataset/. Every file the
steps touch must be named by the recipe, so the recipe cannot fall behind what a new dataset
needs.
"""

from __future__ import annotations

import json
import re
import shutil
import sys

import pytest
from dvc_project import ROOT, DvcProject
from ruamel.yaml import YAML

pytestmark = pytest.mark.process  # minutes: not in the default run, .ci/run runs it

NAME = "ddsm"
PARAMS = {
    "raw": f"data/demo/{NAME}",
    "task": "binary",
    "profile": "demo",
    "demo": {"seed": 7, "n_patients": 12, "images_per_patient": 3},
    "prepare": {"workers": 1},
    "shard": {"ratios": [0.5, 0.25, 0.25]},
    "train": {"demo": {"model": "lenet5", "width": 0.5, "batch_size": 8, "epochs": 1,
                       "num_workers": 0, "threads": 1}},
    "evaluate": {"bootstrap": 20},
}
STAGES = [f"demo@{NAME}", f"prepare_{NAME}", f"shard@{NAME}", f"train@{NAME}",
          f"evaluate@{NAME}"]


def recipe() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    return text.split("## Adding a sixth dataset", 1)[1].split("\n## ", 1)[0]


def edit_dvc_yaml(path) -> None:
    """Step 4: the prepare block, code deps by hand (the other stages are templated)."""
    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    doc = yaml.load(path.read_text(encoding="utf-8"))
    doc["stages"][f"prepare_{NAME}"] = {
        "cmd": f"python -m stages.prepare {NAME}",
        "deps": ["oncopipe/__init__.py", "oncopipe/core", "oncopipe/ingest",
                 "oncopipe/imagefiles", "oncopipe/datasets/__init__.py",
                 f"oncopipe/datasets/{NAME}", "stages/__init__.py", "stages/prepare.py",
                 f"${{{NAME}.raw}}"],
        "params": ["limits", f"{NAME}.raw", f"{NAME}.task", f"{NAME}.prepare"],
        "outs": [f"data/prepared/{NAME}"],
    }
    with path.open("w", encoding="utf-8") as fh:
        yaml.dump(doc, fh)


@pytest.mark.slow
def test_a_sixth_dataset_from_the_recipe(tmp_path):
    project = DvcProject(tmp_path)
    project.commit()
    run = project.run

    # 1. the package
    shutil.copytree(ROOT / "tests" / "data" / "sixth_dataset", tmp_path / "oncopipe" / "datasets"
                    / NAME)
    # 2. its name in the registry
    registry = tmp_path / "oncopipe" / "datasets" / "__init__.py"
    text, n = re.subn(r'(NAMES: tuple\[str, \.\.\.\] = \([^)]*)\)', rf'\1, "{NAME}")',
                      registry.read_text(encoding="utf-8"))
    assert n == 1
    registry.write_text(text, encoding="utf-8")
    # 3. its params section, and its name in `datasets:`
    project.params["datasets"].append(NAME)
    project.params[NAME] = PARAMS
    project.write_params()
    # 4. dvc.yaml
    edit_dvc_yaml(tmp_path / "dvc.yaml")
    run(sys.executable, "-m", "ruff", "check", "-q", f"oncopipe/datasets/{NAME}")

    touched = [line[3:].strip() for line in run("git", "status", "--porcelain", "-uall")
               .splitlines()]
    assert f"oncopipe/datasets/{NAME}/prepare.py" in touched and "dvc.yaml" in touched
    steps = recipe()
    for path in touched:
        named = path in steps or (path.startswith(f"oncopipe/datasets/{NAME}/")
                                  and path.rsplit("/", 1)[1] in steps)
        assert named, f"the recipe does not name {path}"

    # 5. run it, the way a user does
    run("dvc", "repro", *STAGES)
    metrics = json.loads((tmp_path / "metrics" / NAME / "metrics.json").read_text())
    assert metrics["n_test"] == 3 * metrics["n_test_patients"] > 0  # 3 crops a patient
    assert set(metrics["per_class"]) == {"benign", "malignant"}
    image = tmp_path / PARAMS["raw"] / "malignant" / "P001_0.png"
    answer = json.loads(run(sys.executable, "-m", "oncopipe.cli", "predict", NAME, str(image),
                            "--json"))
    assert answer["dataset"] == NAME and set(answer["probabilities"]) == {"benign", "malignant"}
    assert abs(sum(answer["probabilities"].values()) - 1) < 1e-5

    # 6. commit dvc.lock and the metrics: the pipeline is then up to date
    run("git", "add", "-A")
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", NAME)
    assert "up to date" in run("dvc", "status", *STAGES)
    committed = run("git", "show", "--name-only", "--format=", "HEAD").split()
    assert {"dvc.lock", f"metrics/{NAME}/metrics.json"} <= set(committed)
