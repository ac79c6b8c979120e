"""BreakHis v1 naming conventions: subtypes, patient folders, image file names.

The dataset encodes everything twice: once in the folder path
(``benign/SOB/adenosis/SOB_B_A_14-22549AB/40X/``) and once in the file name
(``SOB_B_A-14-22549AB-40-001.png``). The two conventions differ in small ways (underscore
before the year in the folder, hyphen in the file; magnification with ``X`` in the folder,
without in the file; a 3-digit sequence number), so a file copied into the wrong folder is
detectable. :func:`parse_file_name` reads a file name and :func:`location_mismatch` compares
it with where the file lies; the label comes only from a file on which both agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from oncopipe.core.errors import RejectError
from oncopipe.datasets.breakhis.params import MAGNIFICATIONS, SUBTYPES, PatientUnit

# Subtype code (as in the names) -> subtype folder; benign codes first, in the paper's order.
CODES: dict[str, str] = dict(zip(("A", "F", "PT", "TA", "DC", "LC", "MC", "PC"), SUBTYPES,
                                 strict=True))
BENIGN_CODES = ("A", "F", "PT", "TA")
TUMOR_CLASSES: dict[str, str] = {"B": "benign", "M": "malignant"}
SUBTYPE_CLASS: dict[str, str] = {
    sub: "benign" if code in BENIGN_CODES else "malignant" for code, sub in CODES.items()
}

# ASCII only and matched whole (fullmatch): ``\d`` would otherwise take Arabic-Indic or
# full-width digits and ``$`` a trailing newline, so a name that is not the canonical one
# would parse as if it were
_FILE_RE = re.compile(
    r"SOB_(?P<cls>[A-Z])_(?P<code>[A-Z]+)-(?P<year>\d{2})-(?P<slide>\d+[A-Z]*)"
    r"-(?P<mag>\d+)-(?P<seq>\d{3})\.png", re.ASCII
)
_FOLDER_RE = re.compile(
    r"SOB_(?P<cls>[A-Z])_(?P<code>[A-Z]+)_(?P<year>\d{2})-(?P<slide>\d+[A-Z]*)", re.ASCII
)
_SLIDE_DIGITS = re.compile(r"\d+", re.ASCII)


class BreakHisNameError(RejectError):
    """A file or folder name breaks the BreakHis convention; the message says how."""


@dataclass(frozen=True)
class ImageName:
    """What one image file name says about the image."""

    code: str  # subtype code, e.g. "DC"
    year: str  # two digits, "14" or "15"
    slide: str  # slide number with its letter suffix, e.g. "22549AB"
    magnification: int  # 40, 100, 200 or 400
    seq: int

    @property
    def subtype(self) -> str:
        return CODES[self.code]

    @property
    def tumor_class(self) -> str:
        return SUBTYPE_CLASS[self.subtype]

    @property
    def class_letter(self) -> str:
        return "B" if self.tumor_class == "benign" else "M"

    @property
    def folder(self) -> str:
        """The patient folder this file belongs in, e.g. ``SOB_B_A_14-22549AB``."""
        return f"SOB_{self.class_letter}_{self.code}_{self.year}-{self.slide}"

    @property
    def file_name(self) -> str:
        return (f"SOB_{self.class_letter}_{self.code}-{self.year}-{self.slide}"
                f"-{self.magnification}-{self.seq:03d}.png")

    @property
    def stem(self) -> str:
        return self.file_name[: -len(".png")]

    def expected_parts(self) -> tuple[str, ...]:
        """Path of this file relative to ``histology_slides/breast``, as the name implies."""
        return (self.tumor_class, "SOB", self.subtype, self.folder,
                f"{self.magnification}X", self.file_name)

    def patient_id(self, unit: PatientUnit) -> str:
        """The split unit: ``14-22549AB`` (``slide``) or ``14-22549`` (``slide_number``).

        The slide id carries no name, date of birth or record number, so it is already a
        pseudonym. A slide id that occurs under two subtypes (``14-13412``, ductal and
        lobular) gives one patient id, so both folders land in the same split.
        """
        digits = _SLIDE_DIGITS.match(self.slide)
        assert digits is not None  # parse() makes no slide id that does not start with digits
        slide = self.slide if unit == "slide" else digits.group(0)
        return f"{self.year}-{slide}"


def parse_file_name(name: str) -> ImageName:
    """Parse ``SOB_B_A-14-22549AB-40-001.png``; raise :class:`BreakHisNameError` if malformed."""
    m = _FILE_RE.fullmatch(name)
    if m is None:
        if _FOLDER_RE.fullmatch(name.rsplit("-", 2)[0]) and name.endswith(".png"):
            raise BreakHisNameError(
                f"{name!r} uses the folder convention (underscore before the year); "
                "file names have a hyphen there"
            )
        if re.search(r"-\d+X-\d+\.png\Z", name, re.ASCII):
            raise BreakHisNameError(
                f"{name!r} writes the magnification with 'X'; file names have the number only"
            )
        raise BreakHisNameError(
            f"{name!r} is not SOB_<B|M>_<code>-<yy>-<slide>-<magnification>-<nnn>.png"
        )
    _check_class_code(m["cls"], m["code"], name)
    if f"{m['mag']}X" not in MAGNIFICATIONS:  # compared as text: no leading zeros
        raise BreakHisNameError(
            f"{name!r}: magnification {m['mag']!r} is not one of 40, 100, 200, 400"
        )
    return ImageName(code=m["code"], year=m["year"], slide=m["slide"],
                     magnification=int(m["mag"]), seq=int(m["seq"]))


def parse_folder_name(name: str) -> tuple[str, str, str]:
    """Parse ``SOB_B_A_14-22549AB`` into (code, year, slide)."""
    m = _FOLDER_RE.fullmatch(name)
    if m is None:
        hint = " (hyphen before the year: that is the file convention)" if re.match(
            r"SOB_[A-Z]_[A-Z]+-\d{2}-", name, re.ASCII) else ""
        raise BreakHisNameError(f"{name!r} is not SOB_<B|M>_<code>_<yy>-<slide>{hint}")
    _check_class_code(m["cls"], m["code"], name)
    return m["code"], m["year"], m["slide"]


def location_mismatch(parts: tuple[str, ...], image: ImageName) -> str | None:
    """Compare a file's path (relative to ``breast/``) with its name; ``None`` if they agree.

    ``parts`` must already have the expected depth of six. The message names the first
    component where the folders and the file name disagree.
    """
    what = ("benign/malignant folder", "SOB folder", "subtype folder", "patient folder",
            "magnification folder")
    for label, have, want in zip(what, parts[:5], image.expected_parts()[:5], strict=True):
        if have != want:
            return f"{label} is {have!r} but the file name implies {want!r}"
    return None


def _check_class_code(cls: str, code: str, name: str) -> None:
    if cls not in TUMOR_CLASSES:
        raise BreakHisNameError(f"{name!r}: tumour class {cls!r} is neither B nor M")
    if code not in CODES:
        raise BreakHisNameError(
            f"{name!r}: unknown subtype code {code!r} (known: {', '.join(CODES)})"
        )
    implied = "B" if code in BENIGN_CODES else "M"
    if cls != implied:
        raise BreakHisNameError(
            f"{name!r}: subtype {CODES[code]} is {TUMOR_CLASSES[implied]} but the name says {cls}"
        )
