"""Thin DVC stage scripts: parse the dataset name, load params, call the library, log.

Run as ``python -m stages.<name> <dataset>`` from the repository root, so that the code of
the tree being reproduced is imported (``-m`` puts the working directory first on
``sys.path``; DVC's queued experiments run in a copy of the tree).

Each script names the params keys it reads in ``READS`` (relative to the dataset's section,
plus the global ``seed``): exactly its ``params:`` in dvc.yaml, which tests/test_stage_deps.py
checks, while :func:`oncopipe.config.load` refuses any other key at run time. A user's mistake
(a bad params value, a raw folder in the wrong layout) ends the stage with one line and exit
status 2 (:func:`oncopipe.errors.one_line_exit`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from oncopipe.errors import InputError


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
