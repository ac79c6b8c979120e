"""The code each DVC stage runs: its import closure, computed from the source with ``ast``.

Used by tests/test_stage_deps.py to check dvc.yaml, and to write dvc.yaml's code deps after
a change of imports::

    python tests/stage_closure.py          # print what would change
    python tests/stage_closure.py --write  # rewrite the code deps in dvc.yaml

A stage's closure starts at its ``python -m`` module and follows every import (those inside
functions too) within ``oncopipe/`` and ``stages/``, package ``__init__`` files included,
plus, for the stage's dataset, what it reaches through the registry: the dataset's package
(its ``SPEC`` declaration, which imports its ``params``) wherever the registry is imported, and
the module of each processing part it calls as ``datasets.spec(name).<part>(...)`` (a spec
used any other way counts as calling every part). Templated (``foreach``) stages get one
list for all datasets, with the dataset's folder written as ``${item}``; a dataset whose
closure needs a file the others do not have cannot be templated and is reported.
"""

from __future__ import annotations

import ast
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # this checkout's oncopipe

from oncopipe import datasets  # noqa: E402
from oncopipe.contract import LAZY_PARTS  # noqa: E402

CODE_ROOTS = ("oncopipe", "stages")
REGISTRY = "oncopipe.datasets"
REGISTRY_NAMES = {"datasets", "registry"}
EVERY_PART = "*"


def module_file(name: str) -> Path | None:
    """The repository file of module ``name`` (package -> its __init__.py), or None."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _packages(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _is_spec_call(node: ast.AST) -> bool:
    """``datasets.spec(...)`` (or ``registry.spec(...)``)."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "spec" and isinstance(node.func.value, ast.Name)
            and node.func.value.id in REGISTRY_NAMES)


def _imports(path: Path, package: str) -> tuple[set[str], set[str]]:
    """(modules ``path`` imports, processing parts it calls via ``datasets.spec(...)``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    parts: set[str] = set()
    followed: set[int] = set()  # spec calls whose attribute is read right away
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_spec_call(node.value):
            followed.add(id(node.value))
            if node.attr in LAZY_PARTS:
                parts.add(node.attr)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{alias.name}" for alias in node.names)  # submodules
        elif _is_spec_call(node) and id(node) not in followed:
            parts.add(EVERY_PART)
    return names, parts


def _part_modules(dataset: str, parts: set[str]) -> list[str]:
    """The modules of ``dataset``'s processing ``parts``, as its spec declares them."""
    declared = datasets.spec(dataset).parts()
    return [lazy.module for part, lazy in declared.items() if part in parts or EVERY_PART in parts]


def closure(module: str, dataset: str | None) -> set[Path]:
    """Repository files executed by ``python -m module`` for ``dataset``."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name.split(".")[0] not in CODE_ROOTS:
            continue
        for pkg in _packages(name):
            f = module_file(pkg)
            if f is not None and f not in seen:
                todo.append(pkg)
        path = module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        names, parts = _imports(path, package)
        todo.extend(names)
        if name == REGISTRY or parts:
            assert dataset is not None, f"{path} reaches dataset code, but no dataset is known"
            todo.append(f"{REGISTRY}.{dataset}")  # the registry resolves its SPEC
            todo.extend(_part_modules(dataset, parts))
    return seen


def stage_dataset(name: str, names: tuple[str, ...]) -> str | None:
    """The dataset a stage is for: ``demo@lidc``, ``prepare_lidc``, ``lidc_lesions``."""
    found = [d for d in names if d in name.replace("@", "_").split("_")]
    return found[0] if found else None


def stage_module(cmd: str) -> str:
    argv = shlex.split(cmd)
    if argv[:2] != ["python", "-m"]:
        raise ValueError(f"stage command not `python -m ...`: {cmd}")
    return argv[2]


def is_code(dep: str) -> bool:
    """A Python module of the project (a data file shipped inside the package, such as a
    published scan list, is a dependency dvc.yaml names by hand)."""
    return dep.split("/", 1)[0] in CODE_ROOTS and dep.endswith(".py")


def code_deps(module: str, datasets: list[str], templated: bool) -> list[str]:
    """Sorted code deps for ``module`` run for ``datasets`` (one, or all for ``foreach``)."""
    lists = []
    for ds in datasets:
        files = {f.relative_to(ROOT).as_posix() for f in closure(module, ds)}
        if templated:
            files = {f.replace(f"/datasets/{ds}/", "/datasets/${item}/") for f in files}
        lists.append(files)
    common = set.intersection(*lists)
    odd = sorted(set.union(*lists) - common)
    if odd:
        raise ValueError(f"{module}: dataset-specific modules cannot be templated: {odd}")
    return sorted(common)


def rewrite(write: bool) -> int:
    """Compare (or replace) every stage's code deps in dvc.yaml with its closure."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 100
    yaml.indent(mapping=2, sequence=4, offset=2)
    path = ROOT / "dvc.yaml"
    doc = yaml.load(path.read_text(encoding="utf-8"))
    changed = 0
    for name, stage in doc["stages"].items():
        body = stage.get("do", stage)
        templated = "foreach" in stage
        dsets = list(datasets.NAMES) if templated else [stage_dataset(name, datasets.NAMES)]
        want = code_deps(stage_module(body["cmd"]), dsets, templated)
        deps = body.get("deps", [])
        have = [d for d in deps if isinstance(d, str) and is_code(d)]
        if have != want:
            changed += 1
            print(f"{name}: -{sorted(set(have) - set(want))} +{sorted(set(want) - set(have))}")
            others = [d for d in deps if not (isinstance(d, str) and is_code(d))]
            # end-of-line comments belong to their item, not to its position: keep them
            notes = {deps[i]: c for i, c in deps.ca.items.items() if i < len(deps)}
            deps.clear()
            deps.extend([*want, *others])
            deps.ca.items.clear()
            deps.ca.items.update({i: notes[d] for i, d in enumerate(deps) if d in notes})
    if write and changed:
        with path.open("w", encoding="utf-8") as fh:
            yaml.dump(doc, fh)
    print(f"{changed} stage(s) {'rewritten' if write else 'differ'}")
    return changed


if __name__ == "__main__":
    sys.exit(1 if rewrite("--write" in sys.argv[1:]) and "--write" not in sys.argv[1:] else 0)
