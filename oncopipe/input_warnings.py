"""Warnings that go with one prediction: the input is valid, but unusual for the dataset.

What ``predict``/``serve`` cannot use is refused (:class:`~oncopipe.errors.InputError`);
what they can use but that differs from the raw release (odd spacing, a small field of view)
is answered with a visible warning. A dataset's ``preprocess_one`` calls :func:`warn`; the
prediction collects them with :func:`collect` (the ``warnings`` list of the answer). Outside a
collection :func:`warn` does nothing, so the ``prepare`` stage, which shares the code, is
unaffected. A context variable, not a global: ``serve`` answers requests in threads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_CURRENT: ContextVar[list[str] | None] = ContextVar("input_warnings", default=None)


def warn(message: str) -> None:
    """Note one sentence about the input for the answer being prepared (if any)."""
    notes = _CURRENT.get()
    if notes is not None and message not in notes:
        notes.append(message)


@contextlib.contextmanager
def collect() -> Iterator[list[str]]:
    """The warnings noted inside the ``with`` block, in order."""
    notes: list[str] = []
    token = _CURRENT.set(notes)
    try:
        yield notes
    finally:
        _CURRENT.reset(token)
