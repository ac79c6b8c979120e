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

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

from oncopipe.core import limits
from oncopipe.core.errors import InputError, LimitError, NotDatasetInputError, RejectError
from oncopipe.core.manifest import ManifestMeta, write_manifest
from oncopipe.imagefiles.images import (
    Buffer,
    CodecMessages,
    CorruptImageError,
    Header,
    HeaderError,
    ImageError,
    decode,
    file_bytes,
    format_of,
    header_of,
    jpeg_complete_bytes,
    log_warnings,
    resize_hwc,
    to_chw,
)
from oncopipe.ingest import input_warnings
from oncopipe.ingest.arrays import ArrayWriter
from oncopipe.ingest.contact_sheet import write_contact_sheet
from oncopipe.ingest.parallel import default_workers, ordered_map
from oncopipe.ingest.rawfiles import RawLayoutError
from oncopipe.ingest.report import Report

if TYPE_CHECKING:
    from oncopipe.core.config import DatasetConfig
    from oncopipe.core.contract import PredictInput

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
    #: with ``off_size="resize"``: how far (relative, per side) a size may be from ``expect``
    #: and still be resized; farther is not an image of the release and is rejected
    tolerance: float = 0.0


@dataclass(frozen=True)
class Candidate:
    """One labelled raw image that passed the dataset's own checks and is about to be decoded."""

    sample_id: str
    patient_id: str
    label: int
    path: Path  # where to read it
    source: str  # the same file relative to the raw root (manifest ``source``, rejects ``path``)
    extra: dict[str, Any] = field(default_factory=dict)  # extra manifest columns


class WrongSizeError(ImageError, NotDatasetInputError):
    """An image of another size than the release's: a reject in ``prepare``, and an input
    ``predict`` refuses as not the dataset's."""


# An input whose pixels have a standard deviation below this (in 0-255 units) is blank:
# a constant image carries nothing a model could classify, yet it answers with certainty.
BLANK_STD = 1.0


def load_image(path: str | Path, decode: Decode) -> np.ndarray:
    """Decode ``path`` as ``decode`` says; :class:`ImageError` says why a file is unusable.

    The message starts with a short reason ("unreadable", "truncated", "corrupt", "wrong
    size", "too large") followed by a colon, so that the report can count rejections by
    reason.
    """
    return _load_one(Path(path), decode)[0]


def _load_one(path: Path, decode: Decode, buf: Buffer | None = None) -> tuple[np.ndarray, str]:
    """:func:`_load` of one file (its bytes ``buf`` if already read), its codec messages
    captured for it alone."""
    with CodecMessages() as codec:
        if buf is None:
            img, other_size, warnings = _load(path, decode, codec)
        else:
            img, other_size, warnings = _load_bytes(path, buf, decode, codec)
    log_warnings(path, warnings)
    return img, other_size


def _header(path: Path, buf: Buffer) -> Header | None:
    try:
        return header_of(path, buf)
    except HeaderError as exc:
        raise ImageError(f"unreadable: {path.name}: {exc.detail}") from None


def _size_problem(h: int, w: int, decode: Decode) -> str | None:
    """Why an image of ``h`` x ``w`` is not one of the release (``None``: it may be used)."""
    if decode.expect is None or (h, w) == tuple(decode.expect):
        return None
    eh, ew = decode.expect
    if decode.off_size == "resize" and abs(h - eh) <= decode.tolerance * eh \
            and abs(w - ew) <= decode.tolerance * ew:
        return None
    within = f" (or within {decode.tolerance:.0%} of it)" if decode.off_size == "resize" else ""
    return f"expected {eh}x{ew}{within}"


def _load(path: Path, spec: Decode, codec: CodecMessages) -> tuple[np.ndarray, str, list[str]]:
    """:func:`load_image`, plus ``"HxW"`` when an image of another size was resized, and the
    codec's warnings (logged by the caller once ``codec``'s capture is over).

    The file is read once; everything its header declares is checked before a pixel is
    decoded: the size against ``limits.max_image_pixels`` and against the release's size; a
    JPEG must reach its end marker. The decoded size is checked again (a decoder may disagree
    with the header). The image stays (H, W, 3) through crop and resize; the channel-first
    RGB copy is made once, at the output size.
    """
    with file_bytes(path) as buf:
        return _load_bytes(path, buf, spec, codec)


def _load_bytes(path: Path, buf: Buffer, spec: Decode, codec: CodecMessages
                ) -> tuple[np.ndarray, str, list[str]]:
    """:func:`_load` of the file's bytes ``buf``."""
    # a cut download, JPEG content or an empty file under a JPEG name, is "truncated"
    is_jpeg = format_of(buf) == "JPEG" or (
        path.suffix.lower() in _JPEG_SUFFIXES and len(buf) == 0)
    try:
        if is_jpeg and not jpeg_complete_bytes(path, buf):
            raise ImageError(f"truncated: {path.name} has no JPEG end-of-image marker")
    except HeaderError as exc:
        raise ImageError(f"unreadable: {path.name}: {exc.detail}") from None
    header = _header(path, buf)
    if header is None:
        raise ImageError(f"unreadable: {path.name} is not a decodable image")
    try:
        limits.active().check("max_image_pixels", header.pixels,
                              f"{path.name} ({header.height}x{header.width})")
    except LimitError as exc:
        raise LimitError(f"too large: {exc}") from None
    problem = _size_problem(header.height, header.width, spec)
    if problem:
        raise WrongSizeError(f"wrong size: {path.name} is {header.height}x{header.width}, "
                             f"{problem}")
    min_side = None
    if spec.reduced and spec.expect is None:
        min_side = max(spec.size)
    try:
        img, bgr, warnings = decode(path, buf, header, min_side, codec)
    except CorruptImageError as exc:
        raise ImageError(f"corrupt: {path.name}: {exc.detail}") from None
    except ImageError:
        raise ImageError(f"unreadable: {path.name} is not a decodable image") from None
    h, w = img.shape[:2]
    other_size = ""
    if spec.expect is not None and (h, w) != tuple(spec.expect):
        problem = _size_problem(h, w, spec)
        if problem:
            raise WrongSizeError(f"wrong size: {path.name} is {h}x{w}, {problem}")
        other_size = f"{h}x{w}"
    if spec.fit == "center_crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        img = img[top:top + side, left:left + side]
    return to_chw(resize_hwc(img, *spec.size), bgr), other_size, warnings


def load_input(path: str | Path, decode: Decode, spec: PredictInput,
               point: tuple[float, float, float] | None = None) -> np.ndarray:
    """``preprocess_one`` of an image-file dataset: one file as ``prepare`` stores it.

    A whole image is classified, so a ``point`` is refused. A model answers any image with
    confident probabilities (a PCam TIF given to the ISIC model came out "97.7% malignant",
    a 1x1 black PNG "100.0% malignant"), so what the raw release would not hold is refused
    before the model sees it, with :class:`~oncopipe.core.errors.NotDatasetInputError`: another
    format than ``spec.formats`` (``spec`` is the dataset's declared ``predict_input``; the
    format is read from the content), another size than the release's (``decode.expect``), a
    shorter side below ``spec.min_side``, a blank (constant) image. A size off the release's
    but within ``decode.tolerance`` is resized as ``prepare`` does and noted with
    :func:`oncopipe.ingest.input_warnings.warn`. Every message names the full path and says what was
    expected (``spec.expected``).
    """
    if point is not None:
        raise InputError(f"{path}: the input is a whole image; a point is not used")
    path = Path(path)
    wanted = spec.expected
    try:
        with file_bytes(path) as buf:
            found = format_of(buf)
            if found not in spec.formats:
                if found is None:
                    raise ImageError(f"unreadable: {path.name} is not an image of a known "
                                     f"format, expected {wanted}")
                raise NotDatasetInputError(f"wrong format: {path.name} is a {found} image, "
                                           f"expected {wanted}")
            header = _header(path, buf)
            if header is not None and min(header.height, header.width) < spec.min_side:
                raise NotDatasetInputError(
                    f"too small: {path.name} is {header.height}x{header.width} pixels, "
                    f"expected {wanted} (at least {spec.min_side} pixels on the shorter side)")
            img, other_size = _load_one(path, decode, buf)
        if other_size and decode.expect is not None:  # a size differs only from an expected one
            eh, ew = decode.expect
            input_warnings.warn(f"{path.name} is {other_size}, not the release's {eh}x{ew}; "
                                "resized as prepare resizes the release's few such images")
        if float(img.std()) < BLANK_STD:
            raise NotDatasetInputError(f"blank: {path.name} has (nearly) the same value in "
                                       f"every pixel, expected {wanted}")
        return img
    except (InputError, OSError) as exc:
        raise _naming(exc, path) from None


def _naming(exc: InputError | OSError, path: Path) -> InputError:
    """``exc`` as the same kind of error, its message starting with the full path."""
    if isinstance(exc, OSError):
        return ImageError(f"{path}: cannot read ({exc.strerror or exc})")
    kind = type(exc) if type(exc) in _PLAIN_ERRORS else ImageError
    return kind(f"{path}: {exc}")


# error classes whose constructor takes the message alone (CorruptImageError does not)
_PLAIN_ERRORS = (ImageError, WrongSizeError, LimitError, NotDatasetInputError)


def dump_meta(cfg: DatasetConfig, class_names: Sequence[str], source: str,
              resize: str | None = None, patient_level: bool = True) -> ManifestMeta:
    """Manifest metadata of the (N, 3, H, W) uint8 RGB arrays :func:`write_dump` writes."""
    normalisation = {"dtype": "uint8", "scale": "x / 255", "source": source}
    if resize is not None:
        normalisation["resize"] = resize
    return ManifestMeta(dataset=cfg.name, task=cfg.task, class_names=tuple(class_names),
                        layout="CHW", normalisation=normalisation,
                        params_hash=cfg.params_hash, patient_level=patient_level)


Decoded = tuple[np.ndarray | None, str, str]
# a worker decodes this many bytes of output per batch (at least one image, at most 64)
BATCH_BYTES = 4 * 2**20


def batch_size(decode: Decode) -> int:
    """Files per worker batch: enough to pay the per-batch set-up once for many small images,
    few enough that the results in flight stay a few MB per worker."""
    height, width = decode.size
    return max(1, min(64, BATCH_BYTES // (3 * height * width)))


def decode_batch(job: tuple[Sequence[str], Decode]) -> list[Decoded]:
    """Worker: for each path, (array, "", native size if resized from another size) or
    (None, reason, ""); the codec's messages are captured once for the whole batch."""
    paths, spec = job
    results: list[Decoded] = []
    warned: list[tuple[str, list[str]]] = []
    with CodecMessages() as codec:
        for path in paths:
            try:
                img, other_size, warnings = _load(Path(path), spec, codec)
                results.append((img, "", other_size))
                if warnings:
                    warned.append((path, warnings))
            except RejectError as exc:
                results.append((None, str(exc), ""))
            except OSError as exc:
                results.append((None, f"unreadable: {exc}", ""))
    for path, warnings in warned:
        log_warnings(path, warnings)
    return results


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
    paths = [str(c.path) for c in ordered]
    size = batch_size(decode)
    jobs = [(paths[i:i + size], decode) for i in range(0, len(paths), size)]
    rows: list[dict[str, Any]] = []
    examples: dict[str, list[np.ndarray]] = {name: [] for name in meta.class_names}
    other_sizes: dict[str, str] = {}  # source -> native size, of images resized from it
    n_workers = workers or default_workers()
    with ArrayWriter(out_dir / ARRAY_FILE, (3, height, width), np.uint8) as writer:
        batches = ordered_map(decode_batch, jobs, workers=n_workers,
                              desc=f"decode {meta.dataset}", weigh=len, total=len(paths))
        results = itertools.chain.from_iterable(batches)
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
    schema: dict[str, Any] = {"sample_id": pl.String, "patient_id": pl.String, "label": pl.Int64,
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
