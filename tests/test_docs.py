"""The docs a newcomer follows: every shell block runs (or says why it cannot), the package
table matches the tree, the LIDC example points lie in a nodule, and nothing points outside
the repository.

A fenced ``bash`` block in README.md, CONTRIBUTING.md or docs/*.md is either preceded by
``<!-- not-run: why -->`` (real data, a GPU, a server, a long run; or followed by it) or
followed by one or more
``<!-- expect: regex -->`` lines: the test runs it with bash in a copy of the project whose
outputs are checked out from the DVC cache (what ``dvc repro`` made), and each regex must match
what it printed. Output shown in the docs goes in ``console`` blocks, which are not run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*\n((?:<!-- (?:expect|not-run): [^\n]+ -->\n)*)",
                   re.S | re.M)
NOT_RUN = re.compile(r"<!-- not-run: (.+) -->\s*$")
SHELL = {"bash", "sh", "shell"}


def blocks() -> list[tuple[str, str, str, list[str], str | None]]:
    """(where, language, code, expected regexes, not-run reason) of every fenced block."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            where = f"{doc.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}"
            before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            reason = NOT_RUN.search(before) or NOT_RUN.search(m.group(3))
            expects = re.findall(r"<!-- expect: (.+) -->", m.group(3))
            found.append((where, m.group(1).strip(), m.group(2), expects,
                          reason.group(1) if reason else None))
    return found


def test_every_block_says_its_language_and_every_shell_block_runs_or_says_why() -> None:
    found = blocks()
    assert len(found) > 20
    for where, lang, _, expects, reason in found:
        assert lang, f"{where}: a fenced block without a language (bash, console, text, ...)"
        if lang in SHELL:
            assert reason or expects, (f"{where}: a shell block needs `<!-- not-run: why -->` "
                                       "before it or `<!-- expect: regex -->` after it")
            assert not (reason and expects), f"{where}: both not-run and expect"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project's files with the pipeline's outputs checked out from the cache."""
    cache = subprocess.run(["dvc", "cache", "dir"], cwd=ROOT, capture_output=True, text=True)
    if cache.returncode != 0 or not Path(cache.stdout.strip()).is_dir():
        pytest.skip("no DVC cache: run `dvc repro` first")
    root = tmp_path_factory.mktemp("docs") / "project"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        src = ROOT / name
        if src.is_file() and not src.is_symlink():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], [*git, "commit", "-qm", "docs"],
                ["dvc", "cache", "dir", "--local", cache.stdout.strip()]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    done = subprocess.run(["dvc", "checkout", "-q"], cwd=root, capture_output=True, text=True)
    if done.returncode != 0 or not (root / "models" / "lidc").is_dir():
        pytest.skip(f"the pipeline's outputs are not in the DVC cache (run `dvc repro` first): "
                    f"{done.stderr.strip()[-300:]}")
    return root


RUNNABLE = [b for b in blocks() if b[1] in SHELL and b[4] is None]


@pytest.mark.parametrize("where,code,expects", [(b[0], b[2], b[3]) for b in RUNNABLE],
                         ids=[b[0] for b in RUNNABLE])
def test_shell_block_runs_and_prints_what_the_docs_say(project, where, code, expects) -> None:
    env = {**os.environ, "PYTHONPATH": str(project), "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"{where} failed ({done.returncode}):\n{code}\n{out[-3000:]}"
    for regex in expects:
        assert re.search(regex, out), f"{where}: no match for {regex!r} in:\n{out[-3000:]}"


# ---------------------------------------------------------------------------------------------
# Nothing outside the repository, no history in the docs.
# ---------------------------------------------------------------------------------------------

FORBIDDEN = {
    "a path outside the repository": re.compile(r"\.\./shared|/work/"),
    "an issue number": re.compile(r"\bissues? #?\d", re.I),
    "a branch": re.compile(r"\bbranch\b|\bh\d+-[a-z]", re.I),
}
# a commit hash: 7-12 hex digits with a letter and a digit (a truncated sha256 ends in "...")
HASH = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,12}\b(?!\.\.\.)")


def repo_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / n for n in filter(None, listed.split("\0"))
            if not n.startswith("tests/data/") and (ROOT / n).is_file()
            and not (ROOT / n).is_symlink() and n != "tests/test_docs.py"
            and (ROOT / n).suffix in {".md", ".py", ".yaml", ".yml", ".toml", ".cfg", ""}]


def test_no_file_points_outside_the_repository_or_names_an_issue_branch_or_commit() -> None:
    problems = []
    for path in repo_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for what, pattern in FORBIDDEN.items():
            problems += [f"{path.relative_to(ROOT)}: {what}: {m.group(0)!r}"
                         for m in pattern.finditer(text)]
        if path.suffix == ".md" or path.name == "thresholds.yaml":
            problems += [f"{path.relative_to(ROOT)}: a commit hash? {m.group(0)!r}"
                         for m in HASH.finditer(text)]
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# The package table of docs/architecture.md against the tree.
# ---------------------------------------------------------------------------------------------


def test_architecture_table_names_every_module_and_only_paths_that_exist() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text[text.index("## Package layout"):text.index("## Dataset contract")]
    named = [p for row in table.splitlines() if row.startswith("| `")
             for p in re.findall(r"`([\w./<>*-]+)`", row.split(" | ")[0])]
    assert len(named) > 20
    for path in named:
        pattern = path.replace("<ds>", "*")
        assert list(ROOT.glob(pattern.rstrip("/"))), f"docs/architecture.md names {path}: absent"
    covered = {p.rstrip("/") for p in named}
    modules = [p for p in sorted((ROOT / "oncopipe").iterdir())
               if (p.suffix == ".py" and p.name != "__init__.py")
               or (p.is_dir() and (p / "__init__.py").exists())]
    missing = [m for m in (p.relative_to(ROOT).as_posix() for p in modules)
               if not any(c == m or c.startswith(m + "/") for c in covered)]
    assert not missing, f"docs/architecture.md's package table misses {missing}"
    assert "fuzz" in covered and "stages/*.py" in covered


# ---------------------------------------------------------------------------------------------
# One example point per LIDC demo series, inside a nodule.
# ---------------------------------------------------------------------------------------------


def test_lidc_example_points_are_the_demos_and_lie_in_a_nodule(tmp_path) -> None:
    import yaml

    from oncopipe import datasets
    from oncopipe.datasets.lidc import examples, lesions, prepare
    from oncopipe.datasets.lidc.demo import write

    cfg = datasets.load_config("lidc", ROOT / "params.yaml")
    write(cfg.demo, tmp_path / "raw")
    table, _, _ = lesions.build_tables(tmp_path / "raw", cfg.prepare, "examples")
    points = examples.example_points(table)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())["lidc"]["raw"]
    assert len(points) == table["series_dir"].n_unique() == cfg.demo.n_patients + 1  # 2 has two
    doc = (ROOT / "docs" / "lidc.md").read_text()
    assert examples.replace_block(doc, examples.table(points, raw)) == doc, (
        "docs/lidc.md's example points are not the demo's: run "
        "`python -m oncopipe.datasets.lidc.examples docs/lidc.md`")
    points = examples.documented(points)
    assert len(points) == examples.DOC_PATIENTS + 1
    for row in points.iter_rows(named=True):
        crop = prepare.preprocess_one(cfg, tmp_path / "raw" / row["series_dir"],
                                      (row["x_mm"], row["y_mm"], row["z_mm"]))
        centre = crop[0, 31:33, 31:33] if crop.ndim == 3 else crop[0, 15:17, 15:17, 15:17]
        assert float(centre.min()) > 0.5, f"{row['lesion_id']}: the point is not in the nodule"
    # every point the docs give for a demo series is one of these
    given = {f"{raw}/{r['series_dir']} --point {r['x_mm']:.1f} {r['y_mm']:.1f} {r['z_mm']:.1f}"
             for r in points.iter_rows(named=True)}
    uses = [m.group(0) for doc in DOCS for m in re.finditer(
        rf"{re.escape(raw)}/\S+ --point [-\d.]+ [-\d.]+ [-\d.]+", doc.read_text())]
    assert uses and set(uses) <= given, set(uses) - given


# ---------------------------------------------------------------------------------------------
# Help: every option of every command says what it is.
# ---------------------------------------------------------------------------------------------


def test_every_cli_option_has_help_and_the_top_level_help_is_plain_text(capsys) -> None:
    import argparse

    from oncopipe import cli

    parser = cli._parser()
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in [("oncopipe", parser), *subparsers[0].choices.items()]:
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"oncopipe {name}: {action.dest} has no help text"
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "``" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert re.fullmatch(r"oncopipe \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


@pytest.mark.parametrize("module", ["stages.demo", "stages.prepare", "stages.shard",
                                    "stages.train", "stages.evaluate", "stages.lidc_lesions"])
def test_every_script_answers_help_with_its_usage(module) -> None:
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m {module} ")
    assert "unknown dataset" not in done.stdout and "DVC stage" in done.stdout
