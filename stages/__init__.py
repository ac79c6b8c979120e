"""Thin DVC stage scripts: parse the dataset name, load params, call the library, log.

Run as ``python -m stages.<name> <dataset>`` from the repository root, so that the code of
the tree being reproduced is imported (``-m`` puts the working directory first on
``sys.path``; DVC's queued experiments run in a copy of the tree).

Each script names the params keys it reads in ``READS`` (relative to the dataset's section,
plus the global ``seed``): exactly its ``params:`` in dvc.yaml, which tests/test_stage_deps.py
checks, while :func:`oncopipe.config.load` refuses any other key at run time. A user's mistake
(a bad params value, a raw folder in the wrong layout) ends the stage with one line and exit
status 2 (:func:`oncopipe.errors.one_line_exit`).

Every script's body is wrapped by :func:`stage`, the one preamble: argument check, logging,
params load with ``READS``, timing (:func:`oncopipe.perf.measured`), one-line errors.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable

from oncopipe import config, log, perf
from oncopipe.errors import InputError, one_line_exit

Body = Callable[[config.DatasetConfig, logging.Logger], None]
Main = Callable[[list[str] | None], None]


def dataset_name(argv: list[str] | None) -> str:
    """The one argument every stage takes, the dataset's name (``sys.argv`` when ``None``)."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        raise InputError(f"expected one argument, the dataset name; got {args!r}")
    return args[0]


def stage(name: str, reads: tuple[str, ...], dataset: str | None = None) -> Callable[[Body], Main]:
    """Decorator turning ``body(cfg, logger)`` into the stage's ``main(argv)``.

    ``dataset``: the stage's fixed dataset (it then takes no argument); ``None``: the stage
    takes the dataset's name as its one argument. ``-h``/``--help`` prints the usage.
    """
    usage = f"usage: python -m stages.{name}" + ("" if dataset else " <dataset>")

    def wrap(body: Body) -> Main:
        @one_line_exit(name)
        @perf.measured(name, dataset)
        @functools.wraps(body)
        def main(argv: list[str] | None = None) -> None:
            args = argv if argv is not None else sys.argv[1:]
            if args in (["-h"], ["--help"]):
                print(f"{usage}\n\n{(body.__doc__ or '').strip()}")
                raise SystemExit(0)
            if dataset is not None and args:
                raise InputError(f"expected no argument; got {args!r} ({usage})")
            ds = dataset or dataset_name(args)
            logger = log.setup(f"{name}[{ds}]")
            # Anything every stage must do before it reads params or data goes here.
            body(config.load(ds, reads=reads), logger)

        return main

    return wrap
