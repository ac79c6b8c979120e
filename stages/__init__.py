"""Thin DVC stage scripts: parse the dataset name, load params, call the library, log.

Run as ``python -m stages.<name> <dataset>`` from the repository root, so that the code of
the tree being reproduced is imported (``-m`` puts the working directory first on
``sys.path``; DVC's queued experiments run in a copy of the tree).

Each script names the params keys it reads in ``READS`` (relative to the dataset's section,
plus the global ``seed``): exactly its ``params:`` in dvc.yaml, which tests/test_stage_deps.py
checks, while :func:`oncopipe.core.config.load` refuses any other key at run time. A user's mistake
(a bad params value, a raw folder in the wrong layout) ends the stage with one line and exit
status 2 (:func:`oncopipe.core.errors.one_line_exit`).

Every script's body is wrapped by :func:`stage`, the one preamble: argument check, logging,
:func:`housekeeping`, params load with ``READS``, timing (:func:`oncopipe.core.perf.measured`),
one-line errors.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from oncopipe import datasets
from oncopipe.core import config, log, perf
from oncopipe.core.atomic import OUTPUT_ROOTS, sweep_orphans
from oncopipe.core.errors import InputError, one_line_exit

Body = Callable[[config.DatasetConfig, logging.Logger], None]
Main = Callable[[list[str] | None], None]

LOCK_FILE = Path("dvc.lock")


def usage(args: str) -> None:
    """Print the running stage's usage and docstring and exit 0 (its ``--help``)."""
    main = sys.modules["__main__"]
    stage = Path(getattr(main, "__file__", "stage")).stem
    print(f"usage: python -m stages.{stage} {args}\n\n{(main.__doc__ or '').strip()}\n\n"
          "Params are read from params.yaml; run it through `dvc repro` to keep dvc.lock true.")
    raise SystemExit(0)


def dataset_name(argv: list[str] | None) -> str:
    """The one argument every stage takes, the dataset's name (``sys.argv`` when ``None``)."""
    args = argv if argv is not None else sys.argv[1:]
    if args in (["-h"], ["--help"]):
        usage("DATASET")
    if len(args) != 1:
        raise InputError(f"expected one argument, the dataset name; got {args!r}")
    return args[0]


def housekeeping() -> None:
    """Sweep what killed runs left (:func:`oncopipe.core.atomic.sweep_orphans`) and refuse to run
    on a damaged ``dvc.lock``, saying how to restore it (docs/pipeline.md)."""
    sweep_orphans(*OUTPUT_ROOTS)
    check_lock(LOCK_FILE)


def check_lock(path: Path) -> None:
    """:class:`InputError` with the fix if ``path`` exists but is not a DVC lock file.

    DVC rewrites ``dvc.lock`` in place after every stage, so a run killed at that moment can
    leave it truncated.
    """
    if not path.is_file():
        return
    fix = (f"{path}: damaged ({{}}); restore it with `git checkout {path}`, or delete it and "
           "run `dvc commit` (keeps the outputs) or `dvc repro`")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(fix.format("not valid YAML: " + str(exc).splitlines()[0])) from None
    if not isinstance(data, dict) or not isinstance(data.get("stages", {}), dict):
        raise InputError(fix.format("not a mapping of stages"))


def stage(name: str, reads: tuple[str, ...], dataset: str | None = None) -> Callable[[Body], Main]:
    """Decorator turning ``body(cfg, logger)`` into the stage's ``main(argv)``.

    ``dataset``: the stage's fixed dataset (it then takes no argument); ``None``: the stage
    takes the dataset's name as its one argument. ``-h``/``--help`` prints the usage.
    """

    def wrap(body: Body) -> Main:
        @one_line_exit(name)
        @perf.measured(name, dataset)
        @functools.wraps(body)
        def main(argv: list[str] | None = None) -> None:
            args = argv if argv is not None else sys.argv[1:]
            if dataset is not None:
                if args in (["-h"], ["--help"]):
                    usage("")
                if args:
                    raise InputError(f"expected no argument; got {args!r}")
            ds = dataset or dataset_name(args)
            logger = log.setup(f"{name}[{ds}]")
            # Anything every stage must do before it reads params or data goes here.
            housekeeping()
            body(datasets.load_config(ds, reads=reads), logger)

        return main

    return wrap
