"""Shared preparation for 2D image-dump datasets (PCam, ISIC, BreakHis): files -> one array.

The dataset-specific part (which files exist, their labels and patient ids, which raw items
are rejected before any pixel is read: missing from the CSV, unknown label, ...) stays in the
dataset's package. It hands a list of :class:`Candidate` to :func:`write_dump`, which decodes
them in worker processes (in order, bounded memory, progress bar), rejects files that cannot
be decoded, are corrupt or have the wrong native size (or resizes and counts those, as
``Decode.off_size`` says), and writes ``images.npy``, ``manifest.parquet``,
``contact_sheet.png``, ``rejects.parquet`` and ``report.json``; :func:`dump_meta` builds the
manifest metadata those files share.

:func:`load_image` is the one decode path, used by both :func:`write_dump` and (through
:func:`load_input`) each dataset's ``preprocess_one``, so a single image at prediction time is
processed exactly as in training. Its interface is shared by several datasets: keep it stable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

from oncopipe.arrays import ArrayWriter
from oncopipe.contact_sheet import write_contact_sheet
from oncopipe.errors import InputError
from oncopipe.images import CorruptImageError, ImageError, image_format, read_rgb, resize_chw
from oncopipe.manifest import ManifestMeta, write_manifest
from oncopipe.parallel import default_workers, ordered_map
from oncopipe.rawfiles import RawLayoutError
from oncopipe.report import Report

if TYPE_CHECKING:
    from oncopipe.config import DatasetConfig
    from oncopipe.datasets import PredictInput

log = logging.getLogger(__name__)

ARRAY_FILE = "images.npy"
MANIFEST_FILE = "manifest.parquet"
SHEET_FILE = "contact_sheet.png"
_JPEG_SUFFIXES = (".jpg", ".jpeg")


@dataclass(frozen=True)
class Decode:
    """How one image file becomes a (3, H, W) uint8 RGB array."""

    size: tuple[int, int]  # output (height, width)
    expect: tuple[int, int] | None = None  # native (height, width) of the release; None: any
    off_size: Literal["reject", "resize"] = "reject"  # an image not of size ``expect``
    fit: Literal["resize", "center_crop"] = "resize"  # squash to size, or crop the centre square
    reduced: bool = True  # JPEG: decode at 1/2, 1/4 or 1/8 scale, never below the output size


@dataclass(frozen=True)
class Candidate:
    """One labelled raw image that passed the dataset's own checks and is about to be decoded."""

    sample_id: str
    patient_id: str
    label: int
    path: Path  # where to read it
    source: str  # the same file relative to the raw root (manifest ``source``, rejects ``path``)
    extra: dict[str, Any] = field(default_factory=dict)  # extra manifest columns


def load_image(path: str | Path, decode: Decode) -> np.ndarray:
    """Decode ``path`` as ``decode`` says; :class:`ImageError` says why a file is unusable.

    The message starts with a short reason ("unreadable", "truncated", "corrupt", "wrong
    size") followed by a colon, so that the report can count rejections by reason.
    """
    return _load(Path(path), decode)[0]


def _load(path: Path, decode: Decode) -> tuple[np.ndarray, str]:
    """:func:`load_image`, plus ``"HxW"`` when an image of another size was resized."""
    if path.suffix.lower() in _JPEG_SUFFIXES and not _jpeg_complete(path):
        raise ImageError(f"truncated: {path.name} has no JPEG end-of-image marker")
    min_side = None
    if decode.reduced and decode.expect is None:
        min_side = max(decode.size)
    try:
        img = read_rgb(path, min_side=min_side)
    except CorruptImageError as exc:
        raise ImageError(f"corrupt: {path.name}: {exc.detail}") from None
    except ImageError:
        raise ImageError(f"unreadable: {path.name} is not a decodable image") from None
    h, w = img.shape[1:]
    other_size = ""
    if decode.expect is not None and (h, w) != tuple(decode.expect):
        if decode.off_size == "reject":
            raise ImageError(f"wrong size: {path.name} is {h}x{w}, "
                             f"expected {decode.expect[0]}x{decode.expect[1]}")
        other_size = f"{h}x{w}"
    if decode.fit == "center_crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        img = img[:, top:top + side, left:left + side]
    return resize_chw(img, *decode.size), other_size


def load_input(path: str | Path, decode: Decode, spec: PredictInput,
               point: tuple[float, float, float] | None = None) -> np.ndarray:
    """``preprocess_one`` of an image-file dataset: one file as ``prepare`` stores it.

    A whole image is classified, so a ``point`` is refused. ``spec`` is the dataset's
    ``PREDICT_INPUT``: its ``formats`` (names as :func:`oncopipe.images.image_format` gives
    them) are the formats of the raw release, and anything else is refused before decoding,
    because a model answers any image with confident probabilities (a PCam TIF given to the
    ISIC model came out "97.7% malignant"); its ``expected`` describes the right input for
    the message. :class:`ImageError` names the file by its full path.
    """
    if point is not None:
        raise InputError(f"{path}: the input is a whole image; a point is not used")
    try:
        found = image_format(path)
        if found not in spec.formats:
            wanted = spec.expected
            if found is None:
                raise ImageError(f"unreadable: {Path(path).name} is not an image of a known "
                                 f"format, expected {wanted}")
            raise ImageError(f"wrong format: {Path(path).name} is a {found} image, "
                             f"expected {wanted}")
        return load_image(path, decode)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None


def dump_meta(cfg: DatasetConfig, class_names: Sequence[str], source: str,
              resize: str | None = None, patient_level: bool = True) -> ManifestMeta:
    """Manifest metadata of the (N, 3, H, W) uint8 RGB arrays :func:`write_dump` writes."""
    normalisation = {"dtype": "uint8", "scale": "x / 255", "source": source}
    if resize is not None:
        normalisation["resize"] = resize
    return ManifestMeta(dataset=cfg.name, task=cfg.task, class_names=tuple(class_names),
                        layout="CHW", normalisation=normalisation,
                        params_hash=cfg.params_hash, patient_level=patient_level)


def _jpeg_complete(path: Path) -> bool:
    """A JPEG whose download was cut short lacks its end marker; OpenCV would decode it anyway,
    filling the missing rows with grey, so the check must happen before decoding. The marker
    is looked for in the last 4 KiB, not only at the very end, because some cameras append a
    trailer after it; it cannot occur inside entropy-coded data (0xFF is stuffed there). A file
    that is not a JPEG (a PNG under a .jpg name) is left to the decoder, which reads content."""
    try:
        with open(path, "rb") as fh:
            if fh.read(2) not in (b"\xff\xd8", b""):  # another format under a .jpg name:
                return True  # decoded by its content
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 4096))
            tail = fh.read()
    except OSError:
        return False
    return b"\xff\xd9" in tail


def _decode_one(job: tuple[str, Decode]) -> tuple[np.ndarray | None, str, str]:
    """Worker: (array, "", native size if resized from another size) or (None, reason, "")."""
    path, decode = job
    try:
        img, other_size = _load(Path(path), decode)
        return img, "", other_size
    except ImageError as exc:
        return None, str(exc), ""
    except OSError as exc:
        return None, f"unreadable: {exc}", ""


def write_dump(
    candidates: Sequence[Candidate],
    decode: Decode,
    meta: ManifestMeta,
    report: Report,
    out_dir: Path,
    workers: int = 0,
    extra_schema: dict[str, pl.DataType] | None = None,
    per_class: int = 8,
) -> pl.DataFrame:
    """Decode ``candidates`` into ``out_dir`` and write manifest, sheet and report.

    ``report`` must already hold the dataset's own reads and rejections; this adds the
    decoding outcome of every candidate (kept, or rejected with the reason), checks that every
    item read was kept or rejected exactly once, and writes it.
    Samples are stored in ``sample_id`` order, whatever the worker count.
    """
    out_dir = Path(out_dir)
    ordered = sorted(candidates, key=lambda c: c.sample_id)
    height, width = decode.size
    jobs = [(str(c.path), decode) for c in ordered]
    rows: list[dict[str, Any]] = []
    examples: dict[str, list[np.ndarray]] = {name: [] for name in meta.class_names}
    other_sizes: dict[str, str] = {}  # source -> native size, of images resized from it
    n_workers = workers or default_workers()
    with ArrayWriter(out_dir / ARRAY_FILE, (3, height, width), np.uint8) as writer:
        results = ordered_map(_decode_one, jobs, workers=n_workers, desc=f"decode {meta.dataset}")
        for cand, (img, reason, other_size) in zip(ordered, results, strict=True):
            if img is None:
                report.reject(cand.source, reason)
                continue
            if other_size:
                other_sizes[cand.source] = other_size
            index = writer.append(img)
            report.keep()
            rows.append({"sample_id": cand.sample_id, "patient_id": cand.patient_id,
                         "label": cand.label, "array_file": ARRAY_FILE, "array_index": index,
                         "source": cand.source, **cand.extra})
            shown = examples[meta.class_names[cand.label]]
            if len(shown) < per_class:
                shown.append(img)
        if not rows:
            raise RawLayoutError(
                f"{meta.dataset}: none of the {len(ordered)} candidate images could be used "
                f"({report.summary()['rejected_by_reason']}); see the rejections above"
            )
        report.check_accounting()
    schema = {"sample_id": pl.String, "patient_id": pl.String, "label": pl.Int64,
              "array_file": pl.String, "array_index": pl.Int64, "source": pl.String,
              **(extra_schema or {})}
    df = pl.DataFrame(rows, schema=schema)
    write_manifest(df, meta, out_dir / MANIFEST_FILE)
    write_contact_sheet(out_dir / SHEET_FILE, examples, tile=min(96, max(height, width)))
    for name in (ARRAY_FILE, MANIFEST_FILE, SHEET_FILE):
        report.wrote(name)
    counts = df.group_by("label").len().sort("label")
    report.extra["kept_by_class"] = {
        meta.class_names[int(lab)]: int(n) for lab, n in counts.iter_rows()
    }
    if other_sizes:
        native = f"{decode.expect[0]}x{decode.expect[1]}" if decode.expect else "?"
        report.extra["resized_from_other_size"] = {
            "count": len(other_sizes), "expected": native, "files": other_sizes}
        log.warning("%d image(s) not %s, resized like the others (report: "
                    "resized_from_other_size)", len(other_sizes), native)
    report.write(out_dir)
    return df
