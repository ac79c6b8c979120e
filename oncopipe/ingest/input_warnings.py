"""Warnings about an input that is valid but unusual, carried in the prediction's answer.

A dataset's ``preprocess_one`` calls :func:`warn` when it accepts an input that the raw
release would not quite hold (a BreakHis field a few pixels off 700 x 460, resized like the
release's few odd ones). ``oncopipe predict`` and ``oncopipe serve`` collect them with
:func:`collecting` and return them in the answer's ``warnings`` list, so the person reading
the probabilities sees them; with no collector (a stage, a script) they are logged.

The collector is a context variable, not a global, so concurrent requests of ``serve`` (one
thread each) keep their warnings apart.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)

_collector: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "oncopipe_input_warnings", default=None)


def warn(message: str) -> None:
    """Record ``message`` (one sentence naming the input) for the current answer."""
    notes = _collector.get()
    if notes is None:
        log.warning("%s", message)
    elif message not in notes:
        notes.append(message)


@contextlib.contextmanager
def collecting() -> Iterator[list[str]]:
    """Collect the warnings raised inside the block into the list it yields."""
    notes: list[str] = []
    token = _collector.set(notes)
    try:
        yield notes
    finally:
        _collector.reset(token)
