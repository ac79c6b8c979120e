"""Errors a user can fix, and the one-line exit every stage script gives for them.

A wrong params key, a raw folder in the wrong layout or a missing input is the user's to
fix: a 25-line traceback hides the one line that says what to do. Stage scripts wrap their
``main`` in :func:`one_line_exit`, which prints that line and exits 2 (argparse's code for
usage errors); programming errors keep their traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., None])


class InputError(ValueError):
    """A problem with the user's params or raw data; the message names the key or file."""


def one_line_exit(stage: str) -> Callable[[F], F]:
    """Decorator: :class:`InputError` -> ``<stage>: <message>`` on stderr, exit status 2."""

    def wrap(main: F) -> F:
        @functools.wraps(main)
        def run(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except InputError as exc:
                print(f"{stage}: {exc}", file=sys.stderr)
                raise SystemExit(2) from None

        return run  # type: ignore[return-value]

    return wrap
