"""LIDC reader XML through the reader, as ``lidc_lesions`` uses it.

Seeds are reader XMLs written by the LIDC demo generator: the default namespace, none, a
prefixed one, and a radiograph read (``IdriReadMessage``). The target reads the root name and
parses the file as ``lidc_lesions`` does (a radiograph read is its reject), then inserts the
ratings into SQLite as pylidc's clustering does (a rating of 2**63 once crashed that insert;
clustering itself, at a fifth of a second per input, is left to the tests). The
structure-aware mutator copies reading sessions and rois, writes hostile numbers into
ratings and coordinates, and prepends a document type declaration with entities.
"""

from __future__ import annotations

import contextlib
import functools
import random
import re
import sqlite3
import tempfile
from pathlib import Path

from fuzz.harness import Family, mutate_bytes
from oncopipe.core.errors import RejectError
from oncopipe.datasets.lidc import reader_xml
from oncopipe.datasets.lidc.demo import write as write_demo
from oncopipe.datasets.lidc.params import DemoParams

_DEMO = DemoParams(seed=3, n_patients=8, rows=64, pixel_spacing=3.0, n_slices=16,
                   nodules=(1, 1), small_nodules=(1, 1), non_nodules=(1, 1))
_PICK = ("LIDC-IDRI-0001/", "LIDC-IDRI-0002/", "LIDC-IDRI-0003/", "/071.xml")


@functools.cache
def _seeds() -> tuple[bytes, ...]:
    with tempfile.TemporaryDirectory() as tmp:
        write_demo(_DEMO, Path(tmp))
        files = sorted(Path(tmp).rglob("*.xml"))
        return tuple(_few_rois(next(p for p in files if pick in p.as_posix()).read_text())
                     for pick in _PICK)


def _few_rois(text: str, keep: int = 2) -> bytes:
    """The XML with at most ``keep`` rois per mark: every structure stays, and each input
    costs pylidc's clustering a fraction of a whole nodule's contours."""
    out, seen = [], 0
    for part in re.split(r"(<(?:\w+:)?roi>.*?</(?:\w+:)?roi>)", text, flags=re.S):
        if re.match(r"<(?:\w+:)?roi>", part):
            seen += 1
            if seen > keep:
                continue
        elif "unblindedReadNodule>" in part:
            seen = 0
        out.append(part)
    return "".join(out).encode()


def target(path: Path) -> None:
    """Root name and parse as ``lidc_lesions`` reads an XML (a radiograph read is its
    reject), then every rating into SQLite, as pylidc's clustering stores them."""
    if reader_xml.root_name(path) == "IdriReadMessage":
        raise RejectError(f"{path}: radiograph read (IdriReadMessage), skipped")
    msg = reader_xml.parse(path)
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        db.execute(f"create table annotation ({', '.join(reader_xml.RATINGS)})")
        db.executemany(
            f"insert into annotation values ({', '.join('?' * len(reader_xml.RATINGS))})",
            [[(mark.characteristics or {}).get(r) for r in reader_xml.RATINGS]
             for mark in msg.nodules])


_HOSTILE = ("9223372036854775808", "-1", "0", "7", "1e308", "inf", "nan", "", "3.5",
            "99999999999999999999999", "-9223372036854775809", "&lt;", "1e-300")
_BOMB = (b'<?xml version="1.0"?>\n<!DOCTYPE LidcReadMessage [<!ENTITY a "aaaaaaaaaa">'
         b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n')


def _copy_block(text: str, tag: str, rng: random.Random) -> str:
    blocks = [m.span() for m in re.finditer(rf"<(\w+:)?{tag}>.*?</(\w+:)?{tag}>", text, re.S)]
    if not blocks:
        return text
    start, end = rng.choice(blocks)
    return text[:end] + text[start:end] * rng.choice((1, 3, 10, 100)) + text[end:]


def _edit_number(text: str, rng: random.Random) -> str:
    fields = [m.span(2) for m in re.finditer(
        r"<((?:\w+:)?(?:malignancy|subtlety|calcification|internalStructure|xCoord|yCoord|"
        r"imageZposition|texture))>([^<]*)<", text)]
    if not fields:
        return text
    start, end = rng.choice(fields)
    return text[:start] + rng.choice(_HOSTILE) + text[end:]


def mutate(data: bytes, rng: random.Random) -> bytes:
    text = data.decode("utf-8", "replace")
    op = rng.randrange(5)
    if op == 0:
        text = _copy_block(text, "readingSession", rng)
    elif op == 1:
        text = _copy_block(text, "roi", rng)
    elif op == 2:
        text = _copy_block(text, "edgeMap", rng)
    elif op == 3:
        for _ in range(rng.randint(1, 3)):
            text = _edit_number(text, rng)
    else:
        body = re.sub(r"^<\?xml[^>]*\?>\s*", "", text)
        return _BOMB + body.replace("</ResponseHeader>", "&b;</ResponseHeader>", 1).encode()
    out = text.encode()
    return out if out != data else mutate_bytes(data, rng)


FAMILY = Family("lidc_xml", ".xml", _seeds, target, mutate)
