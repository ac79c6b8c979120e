"""Image decode (TIFF, JPEG, PNG) as the image-dump ``prepare`` stages decode their files.

Seeds: one file of each format from the demo generators (a PCam TIFF patch, an ISIC JPEG
photograph, a BreakHis PNG field). Target: :func:`oncopipe.imagefiles.imagedump.load_image` with the
``Decode`` spec of the dataset whose release holds that format, and with ISIC's (any size,
reduced JPEG decode), because ISIC's ``prepare`` decodes whatever content lies under a
``.jpg`` name. The structure-aware mutator rewrites the fields a decompression bomb or an
out-of-file read would use: PNG IHDR (size, depth, colour type; CRC recomputed), JPEG SOF
(size, precision, components) and segment lengths, TIFF header and first directory (the
directory offset, any entry's type, count and value).
"""

from __future__ import annotations

import functools
import importlib
import random
import struct
import tempfile
import zlib
from pathlib import Path

import yaml

from fuzz.harness import Family, mutate_bytes
from oncopipe import datasets
from oncopipe.core import config
from oncopipe.imagefiles.imagedump import Decode, load_image
from oncopipe.imagefiles.images import image_format

_SIZES = (0, 1, 2, 95, 96, 97, 255, 256, 460, 700, 4095, 7071, 7072, 30000, 32767, 32768,
          65535, 65536, 2**24, 2**31 - 1, 2**31, 2**32 - 1)


_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _demo_cfg(name: str, tmp: Path, demo: dict) -> config.DatasetConfig:
    path = tmp / f"params-{name}.yaml"
    section = {"raw": "unused", "task": "binary", "demo": demo}
    path.write_text(yaml.safe_dump({"seed": 0, "datasets": [name], name: section}))
    return datasets.load_config(name, path)


@functools.cache
def _seeds() -> tuple[bytes, ...]:
    """The first train file of small PCam, ISIC and BreakHis demo trees.

    Also loads the decode specs, here in the parent, so that each forked child inherits
    them instead of importing the dataset modules again.
    """
    _decodes()
    small = {"pcam": {"n_train": 10, "n_test": 0},
             "isic": {"n_patients": 2, "images_per_patient": [1, 1], "n_test": 0,
                      "large_images": 0, "duplicates": 0},
             "breakhis": {"patients_per_subtype": 2, "images_per_magnification": [1, 1]}}
    pattern = {"pcam": "train/*.tif", "isic": "jpeg/train/*.jpg", "breakhis": "**/*.png"}
    found = []
    with tempfile.TemporaryDirectory(prefix="fuzz-image-seeds-") as tmp:
        for name, demo in small.items():
            cfg = _demo_cfg(name, Path(tmp), demo)
            out = Path(tmp) / name
            datasets.spec(name).write_demo(cfg, out)
            found.append(sorted(out.glob(pattern[name]))[0].read_bytes())
    return tuple(found)


@functools.cache
def _decodes() -> dict[str, Decode]:
    """Each format's own dataset spec, and ISIC's under ``"any"`` (the project's params)."""
    specs = {}
    for fmt, name in (("TIFF", "pcam"), ("JPEG", "isic"), ("PNG", "breakhis")):
        prepare = importlib.import_module(f"oncopipe.datasets.{name}.prepare")
        cfg = datasets.load_config(name, _PARAMS)
        specs[fmt] = prepare.DECODE if name == "pcam" else prepare.decode_spec(cfg.prepare)
    specs["any"] = specs["JPEG"]
    return specs


def target(path: Path) -> None:
    decodes = _decodes()
    own = decodes.get(image_format(path) or "", decodes["any"])
    load_image(path, own)
    if own is not decodes["any"]:
        load_image(path, decodes["any"])


def _value(rng: random.Random, bits: int) -> int:
    return rng.choice(_SIZES) % (1 << bits) if rng.random() < 0.7 else rng.getrandbits(bits)


def _mutate_png(buf: bytearray, rng: random.Random) -> None:
    if len(buf) < 33:
        return
    field = rng.choice(((16, ">I", 31), (20, ">I", 31), (24, ">B", 8), (25, ">B", 8),
                        (26, ">B", 8), (27, ">B", 8), (28, ">B", 8)))
    offset, code, bits = field
    struct.pack_into(code, buf, offset, _value(rng, bits) if bits > 8 else rng.choice(
        (0, 1, 2, 3, 4, 6, 8, 16, 255)))
    struct.pack_into(">I", buf, 29, zlib.crc32(bytes(buf[12:29])))


def _jpeg_segments(buf: bytearray) -> list[tuple[int, int]]:
    """(marker code, offset of its length field) of the segments before the first SOS."""
    found, pos = [], 2
    while pos + 4 <= len(buf) and buf[pos] == 0xFF:
        code = buf[pos + 1]
        found.append((code, pos + 2))
        if code == 0xDA:
            break
        pos += 2 + int.from_bytes(buf[pos + 2:pos + 4], "big")
    return found


def _mutate_jpeg(buf: bytearray, rng: random.Random) -> None:
    segments = _jpeg_segments(buf)
    if not segments:
        return
    sof = [at for code, at in segments if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8,
                                                                                  0xCC)]
    if sof and rng.random() < 0.7:
        at = sof[0]
        which = rng.choice(("height", "width", "both", "precision", "components"))
        if which in ("height", "both"):
            struct.pack_into(">H", buf, at + 3, _value(rng, 16))
        if which in ("width", "both"):
            struct.pack_into(">H", buf, at + 5, _value(rng, 16))
        if which == "precision":
            buf[at + 2] = rng.choice((0, 1, 8, 12, 16, 255))
        if which == "components":
            buf[at + 7] = rng.choice((0, 1, 2, 3, 4, 255))
    else:
        _, at = rng.choice(segments)
        struct.pack_into(">H", buf, at, _value(rng, 16))


def _mutate_tiff(buf: bytearray, rng: random.Random) -> None:
    order = "<" if buf[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", buf, 4)
    if rng.random() < 0.15 or ifd + 2 > len(buf):
        struct.pack_into(order + "I", buf, 4, _value(rng, 32))
        return
    (count,) = struct.unpack_from(order + "H", buf, ifd)
    entries = [ifd + 2 + 12 * i for i in range(count) if ifd + 14 + 12 * i <= len(buf)]
    if not entries:
        struct.pack_into(order + "H", buf, ifd, _value(rng, 16))
        return
    at = rng.choice(entries)
    part = rng.choice(("type", "count", "value", "value"))
    if part == "type":
        struct.pack_into(order + "H", buf, at + 2, rng.choice((0, 1, 2, 3, 4, 5, 12, 16, 99)))
    elif part == "count":
        struct.pack_into(order + "I", buf, at + 4, _value(rng, 32))
    else:
        (kind,) = struct.unpack_from(order + "H", buf, at + 2)
        if kind == 3 and rng.random() < 0.8:
            struct.pack_into(order + "H", buf, at + 8, _value(rng, 16))
        else:
            struct.pack_into(order + "I", buf, at + 8, _value(rng, 32))


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three edits of the size and layout fields of the format's header."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        if buf[:8] == b"\x89PNG\r\n\x1a\n":
            _mutate_png(buf, rng)
        elif buf[:2] == b"\xff\xd8":
            _mutate_jpeg(buf, rng)
        elif buf[:4] in (b"II*\x00", b"MM\x00*") and len(buf) >= 8:
            _mutate_tiff(buf, rng)
    if rng.random() < 0.2:
        return mutate_bytes(bytes(buf), rng)
    return bytes(buf)


FAMILY = Family(name="image", suffix=".img", seeds=_seeds, target=target, mutate=mutate)
