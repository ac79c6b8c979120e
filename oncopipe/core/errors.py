"""The one error hierarchy: what the user can fix, and what a reader makes of hostile bytes.

Every problem with the user's params, raw data or uploaded input is an :class:`InputError`;
the message names the key or file and the problem in one line. Anything else that escapes
is a bug in this project and keeps its traceback (a stage) or becomes a logged 500 with no
traceback in the body (``serve``).

- :class:`ParamsError`: a params key or value (the key path is in the message).
- :class:`RawLayoutError`: a raw folder in the wrong layout.
- :class:`RejectError`: one raw file cannot be used; a stage records it as a reject (path,
  reason) and goes on, ``predict``/``serve`` refuse the input with the message. Every reader
  raises a subclass of it: :class:`LimitError` when a size the file declares exceeds the
  file's real size or one of :mod:`oncopipe.core.limits`, :class:`DecodeError` when a
  dependency failed on the bytes.
- :class:`NotDatasetInputError`: a well-formed input that is not what the dataset's raw
  release holds (wrong size, blank, not CT); ``predict``/``serve`` refuse it.
- :class:`ModelError`: a model or its weights cannot be built or loaded as configured.
- :class:`DiskFullError`: no space left where a stage writes; names the path.

Stage scripts wrap their ``main`` in :func:`one_line_exit`, which prints the one line and
exits 2 (argparse's code for usage errors).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


class InputError(ValueError):
    """A problem with the user's params, raw data or input; the message names the key or
    file. Subclasses ``ValueError`` so callers written against the standard library still
    catch it."""


class ParamsError(InputError):
    """A params key is missing, unknown or of the wrong type or range."""


class RawLayoutError(InputError):
    """A raw folder is not laid out as the provider ships the dataset."""


class RejectError(InputError):
    """One raw file cannot be used. A stage records ``(path, reason)`` and carries on."""


class LimitError(RejectError):
    """A size the file declares (dims, offsets, lengths, inflated bytes, cells) exceeds the
    file's real size or a limit of :mod:`oncopipe.core.limits`; raised before any allocation."""


class DecodeError(RejectError):
    """A dependency (pydicom, nibabel, zlib, OpenCV, a decoder plugin) failed on the bytes."""


class NotDatasetInputError(InputError):
    """A readable input that is not what the dataset's raw release holds."""


class ModelError(InputError):
    """A model or its weights cannot be built or loaded as the params or files say."""


class DiskFullError(InputError):
    """No space left on the device where a stage writes; the message names the path."""


# What no reader may swallow: the user interrupting, the interpreter exiting.
_NOT_OURS = (KeyboardInterrupt, SystemExit, GeneratorExit)


@contextlib.contextmanager
def bad_bytes_reject(path: str | Path, what: str,
                     error: type[RejectError] = DecodeError) -> Iterator[None]:
    """Turn whatever a dependency raises on bad bytes into a reject naming ``path``.

    Decoders fail in ways their docs do not list: pydicom raises lazily on first access,
    zlib raises ``zlib.error``, OpenCV ``cv2.error``, Rust plugins a ``PanicException`` that
    derives from ``BaseException``. Our own :class:`InputError` passes through unchanged;
    ``MemoryError`` becomes a reject because the only way to reach it is a size the bytes
    declared. ``KeyboardInterrupt``/``SystemExit`` are never swallowed.
    """
    try:
        yield
    except InputError:
        raise
    except _NOT_OURS:
        raise
    except BaseException as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise error(f"{path}: {what} failed ({type(exc).__name__}"
                    f"{': ' + detail if detail else ''})") from exc


def disk_full(exc: OSError, path: str | Path, needed: int | None = None
              ) -> DiskFullError | None:
    """A :class:`DiskFullError` naming ``path`` if ``exc`` is ENOSPC/EDQUOT, else None.

    ``needed``: bytes the write had reached when the disk filled (a lower bound on the space
    the output needs); the message gives it beside the space still free there.
    """
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    space = ""
    if needed is not None:
        space = f"; it needs more than {_size(needed)}"
        where = Path(path).parent
        while not where.exists() and where != where.parent:
            where = where.parent
        with contextlib.suppress(OSError):
            space += f", {_size(shutil.disk_usage(where).free)} free there"
    return DiskFullError(f"{path}: no space left on the device ({exc.strerror}){space}; "
                         "free space there or point the output elsewhere")


def _size(n: int) -> str:
    value, unit = float(n), "bytes"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{n:,} bytes" if unit == "bytes" else f"{value:,.1f} {unit}"


def one_line_exit(stage: str) -> Callable[[F], F]:
    """Decorator: :class:`InputError` (and a full disk) -> ``<stage>: <message>`` on stderr,
    exit status 2."""

    def wrap(main: F) -> F:
        @functools.wraps(main)
        def run(*args: object, **kwargs: object) -> object:
            try:
                return main(*args, **kwargs)
            except InputError as exc:
                message = str(exc)
            except OSError as exc:
                full = disk_full(exc, exc.filename or "output")
                if full is None:
                    raise
                message = str(full)
            # Release the failed run's frames now (outside the handler, and those in reference
            # cycles through the exception): a worker pool they hold open then shuts down
            # cleanly instead of during interpreter shutdown, which prints a traceback.
            gc.collect()
            print(f"{stage}: {message}", file=sys.stderr)
            raise SystemExit(2)

        return run  # type: ignore[return-value]

    return wrap
