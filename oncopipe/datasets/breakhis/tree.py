"""Walk a BreakHis download and sort every file into an image to decode or a recorded reason.

Two layouts are in circulation: the original archive (``BreaKHis_v1/histology_slides/breast``)
and the Kaggle mirror, which nests one more ``BreaKHis_v1/`` level and adds ``Folds.csv``
(image-level folds from the paper; this pipeline splits by patient, so it is not used). The
raw path may point at the folder holding ``BreaKHis_v1``, at ``BreaKHis_v1`` itself, or at
``breast``. Every file under the raw path is listed (:func:`oncopipe.ingest.rawfiles.walk`, sorted)
and ends up either as a :class:`TreeImage` or as a ``(path, reason)`` rejection; nothing is
skipped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from oncopipe.datasets.breakhis.naming import (
    SUBTYPE_CLASS,
    SUBTYPES,
    BreakHisNameError,
    ImageName,
    location_mismatch,
    parse_file_name,
    parse_folder_name,
)
from oncopipe.ingest.rawfiles import RawLayoutError

_BREAST = ("histology_slides", "breast")
_MAX_NESTING = 3  # raw/, raw/BreaKHis_v1/, raw/BreaKHis_v1/BreaKHis_v1/ (Kaggle), one spare


@dataclass(frozen=True)
class TreeImage:
    """An image whose name and location agree; still to be decoded and checked."""

    path: Path  # absolute (or as given under raw)
    source: str  # relative to the raw root, POSIX separators
    name: ImageName


def find_breast_root(raw: Path) -> Path:
    """The ``histology_slides/breast`` folder under ``raw`` (exactly one must exist)."""
    if not raw.is_dir():
        raise RawLayoutError(f"{raw}: not a directory")
    if raw.name == _BREAST[1] and _looks_like_breast(raw):
        return raw
    found: list[Path] = []
    level = [raw]
    for _ in range(_MAX_NESTING + 1):
        found += [d / _BREAST[0] / _BREAST[1] for d in level
                  if (d / _BREAST[0] / _BREAST[1]).is_dir()]
        level = sorted(c for d in level for c in d.iterdir() if c.is_dir())
    found = _distinct(found)  # a symlink back up the tree must not count as a second tree
    if not found:
        raise RawLayoutError(
            f"{raw}: no histology_slides/breast folder within {_MAX_NESTING} levels (expected "
            "BreaKHis_v1/histology_slides/breast/..., or the Kaggle mirror's extra BreaKHis_v1/)"
        )
    if len(found) > 1:
        listed = ", ".join(str(p) for p in found)
        raise RawLayoutError(
            f"{raw}: several BreakHis trees ({listed}); point breakhis.raw at one of them"
        )
    return found[0]


def classify(file: Path, raw: Path, breast: Path) -> TreeImage | str:
    """A :class:`TreeImage`, or the reason (``"category: detail"``) the file is not one."""
    if not file.is_relative_to(breast):
        if file.name == "Folds.csv":
            return ("ignored: Kaggle mirror's image-level folds, not used "
                    "(splits here are by patient)")
        return "unexpected location: outside histology_slides/breast"
    parts = file.relative_to(breast).parts
    if file.suffix.lower() != ".png":
        return f"not an image: extension {file.suffix or '(none)'!r}, BreakHis images are .png"
    if len(parts) != 6 or parts[1] != "SOB":
        return ("unexpected location: expected "
                "<benign|malignant>/SOB/<subtype>/<patient>/<magnification>/<file>.png")
    if parts[2] not in SUBTYPES:
        return f"unknown subtype: folder {parts[2]!r} is none of {', '.join(SUBTYPES)}"
    if parts[0] != SUBTYPE_CLASS[parts[2]]:
        return (f"name/folder mismatch: subtype {parts[2]} is {SUBTYPE_CLASS[parts[2]]} but "
                f"lies under {parts[0]!r}")
    try:
        parse_folder_name(parts[3])
    except BreakHisNameError as exc:
        return f"bad folder name: {exc}"
    try:
        name = parse_file_name(parts[5])
    except BreakHisNameError as exc:
        return f"bad file name: {exc}"
    mismatch = location_mismatch(parts, name)
    if mismatch:
        return f"name/folder mismatch: {mismatch}"
    return TreeImage(path=file, source=file.relative_to(raw).as_posix(), name=name)


def _distinct(folders: list[Path]) -> list[Path]:
    """``folders`` without later paths to a folder already listed (compared by inode)."""
    seen: dict[tuple[int, int], Path] = {}
    for folder in folders:
        st = folder.stat()
        seen.setdefault((st.st_dev, st.st_ino), folder)
    return list(seen.values())


def _looks_like_breast(path: Path) -> bool:
    return (path / "benign").is_dir() or (path / "malignant").is_dir()
