"""BreakHis file and folder names, as :mod:`oncopipe.datasets.breakhis.naming` parses them.

Seeds: the file and patient-folder names of the demo tree. Target: the input's bytes as a
file name (``os.fsdecode``, as a directory listing gives it) through
:func:`~oncopipe.datasets.breakhis.naming.parse_file_name` and
:func:`~oncopipe.datasets.breakhis.naming.parse_folder_name`. A name either is rejected or
parses into parts that spell that very name again, in ASCII: a name accepted that is not
its own canonical form (a Unicode digit, a trailing newline) is a misread and counts as a
crash.
The mutator makes the edits a regular expression is weak against: Unicode digits and
letters, line breaks, long digit runs, separators swapped or doubled, case changes.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from fuzz.harness import Family
from oncopipe.datasets.breakhis import demo
from oncopipe.datasets.breakhis.naming import (
    BENIGN_CODES,
    BreakHisNameError,
    ImageName,
    parse_file_name,
    parse_folder_name,
)
from oncopipe.datasets.breakhis.params import MAGNIFICATIONS

_TRICKS = ("\u0663", "\uff13", "\u0967", "\U0001d7d9", "\n", "\r\n", "\x00", "\u212a",
           "\u0130", "\u00c5", "-", "_", ".png", "X", " ", "9" * 5000, "0", "/", "\udcff")


def seeds() -> list[bytes]:
    names = []
    for code, year, slide in demo.patients(0, 2):
        for mag in MAGNIFICATIONS:
            image = ImageName(code=code, year=year, slide=slide, magnification=int(mag[:-1]),
                              seq=1)
            names.append(image.file_name)
        names.append(image.folder)
    return [os.fsencode(n) for n in sorted(set(names))]


def _folder(parts: tuple[str, str, str]) -> str:
    code, year, slide = parts
    return f"SOB_{'B' if code in BENIGN_CODES else 'M'}_{code}_{year}-{slide}"


def target(path: Path) -> None:
    name = os.fsdecode(path.read_bytes())
    rejected: BreakHisNameError | None = None
    for parse, spell in ((parse_file_name, lambda got: got.file_name),
                         (parse_folder_name, _folder)):
        try:
            got = parse(name)
        except BreakHisNameError as exc:
            rejected = exc
            continue
        again = spell(got)
        if again != name or not name.isascii():
            raise AssertionError(f"{name!r} accepted as {again!r}")
        return
    assert rejected is not None
    raise rejected


def mutate(data: bytes, rng: random.Random) -> bytes:
    name = os.fsdecode(data)
    for _ in range(rng.randint(1, 3)):
        pos = rng.randrange(len(name) + 1)
        trick = rng.choice(_TRICKS)
        op = rng.randrange(4)
        if op == 0:  # replace one character
            name = name[:pos] + trick + name[pos + 1:]
        elif op == 1:  # insert
            name = name[:pos] + trick + name[pos:]
        elif op == 2:  # append (a trailing newline, a second suffix)
            name += trick
        else:  # change case of one character
            name = name[:pos] + name[pos:pos + 1].swapcase() + name[pos + 1:]
    return os.fsencode(name)


FAMILY = Family(name="breakhis_name", suffix=".name", seeds=seeds, target=target,
                mutate=mutate)
