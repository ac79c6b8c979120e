"""``oncopipe serve``'s upload handling: a zipped DICOM series or a NIfTI study as a user
uploads it.

Seeds are zips of one LIDC demo series folder as the web page asks for them (deflated and
stored, with and without folder entries), plus one with an entry in a subfolder, and a small
MosMed demo study (``.nii.gz`` and ``.nii``). The target is what ``serve`` does with the
upload, through its own :class:`oncopipe.serve.uploads.Upload`: a zip (anything that is not
gzip or a NIfTI header) as LIDC's series upload, unpacked under the active limits (per entry,
members, in all) down to its one series folder; a gzip or NIfTI file as MosMed's volume
upload, kept as it came and handed to MosMed's ``preprocess_one``, whose reader reads the
header first and inflates no more than it declares. A refusal is an ``InputError``.

The structure-aware mutator edits the zip's own fields: in a local or central header the
compression method, flags, sizes, CRC, name (``..``, absolute, very long, NUL) or external
attributes (a symbolic link); in the end record the entry counts and the directory's offset.
"""

from __future__ import annotations

import functools
import gzip
import importlib
import io
import random
import struct
import tempfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import yaml

from fuzz.harness import Family, mutate_bytes
from oncopipe import datasets
from oncopipe.core import config, limits
from oncopipe.datasets.lidc.demo import write as write_demo
from oncopipe.datasets.lidc.params import DemoParams
from oncopipe.serve import uploads

_DEMO = DemoParams(seed=5, n_patients=8, rows=64, pixel_spacing=3.0, n_slices=16,
                   nodules=(1, 1), small_nodules=(0, 0), non_nodules=(0, 0))
_SLICES = 6  # of the series: enough for a series, small enough for fast inputs


@functools.cache
def _seeds() -> tuple[bytes, ...]:
    with tempfile.TemporaryDirectory() as tmp:
        write_demo(_DEMO, Path(tmp))
        series = sorted({p.parent for p in Path(tmp).rglob("*.dcm")})[0]
        files = sorted(series.glob("*.dcm"))[:_SLICES]
        seeds = []
        for method, folders in ((zipfile.ZIP_DEFLATED, False), (zipfile.ZIP_STORED, True)):
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", method) as zf:
                if folders:
                    zf.writestr(zipfile.ZipInfo(f"{series.name}/"), b"")
                for f in files:
                    zf.write(f, f"{series.name}/{f.name}")
            seeds.append(buf.getvalue())
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in files[:3]:
                zf.write(f, f"upload/{series.name}/{f.name}")
            zf.writestr("upload/README.txt", "a note beside the series")
        seeds.append(buf.getvalue())
        datasets.spec("mosmed").write_demo(_mosmed(), Path(tmp) / "mosmed")
        study = sorted((Path(tmp) / "mosmed").rglob("*.nii.gz"))[0].read_bytes()
        seeds += [study, gzip.decompress(study)]
    return tuple(seeds)


@functools.cache
def _mosmed() -> config.DatasetConfig:
    """MosMed's settings at the serve tests' small sizes: 8 x 32 x 32 model input, a demo of
    one 32 x 32 study. Also imports MosMed's ``prepare`` here, in the parent, so that each
    forked child inherits it instead of importing it again."""
    importlib.import_module("oncopipe.datasets.mosmed.prepare")
    section = {"raw": "unused", "task": "binary",
               "demo": {"studies": [1, 0, 0, 0, 0], "masks": 0, "size": 32, "slices": [8, 10]},
               "prepare": {"shape": [8, 32, 32]}}
    with tempfile.TemporaryDirectory(prefix="fuzz-upload-") as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(yaml.safe_dump({"seed": 0, "datasets": ["mosmed"], "mosmed": section}))
        return datasets.load_config("mosmed", path)


def _is_volume(head: bytes) -> bool:
    """Gzip, or a NIfTI-1/2 header (``sizeof_hdr`` 348 or 540, either byte order)."""
    sizes = {int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")}
    return head[:2] == b"\x1f\x8b" or bool(sizes & {348, 540})


def target(path: Path) -> None:
    """Handle the file as ``serve`` handles an upload for LIDC (a zip) or MosMed (a volume)."""
    with open(path, "rb") as fh:
        volume = _is_volume(fh.read(4))
        fh.seek(0)
        name = "mosmed" if volume else "lidc"
        spec = datasets.spec(name).predict_input
        client = SimpleNamespace(filename=f"upload{spec.suffixes[-1]}", file=fh)
        settings = SimpleNamespace(max_upload=512 << 20)  # serve's default
        with uploads.Upload(settings, spec, client, limits.active()) as up:  # type: ignore[arg-type]
            found = up.path()
            if volume:
                datasets.spec(name).preprocess_one(_mosmed(), found)


# (offset in the header, struct code) of the fields worth lying in
_LOCAL = {"method": (8, "H"), "flags": (6, "H"), "crc": (14, "I"), "compressed": (18, "I"),
          "size": (22, "I"), "name_len": (26, "H"), "extra_len": (28, "H")}
_CENTRAL = {"method": (10, "H"), "flags": (8, "H"), "crc": (16, "I"), "compressed": (20, "I"),
            "size": (24, "I"), "name_len": (28, "H"), "extra_len": (30, "H"),
            "attrs": (38, "I"), "offset": (42, "I")}
_END = {"disk_entries": (8, "H"), "entries": (10, "H"), "cd_size": (12, "I"),
        "cd_offset": (16, "I")}
_VALUES = (0, 1, 8, 12, 14, 99, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 25, (1 << 25) + 1,
           1536 << 20)
_NAMES = (b"../evil.dcm", b"/etc/evil.dcm", b"a/../../b.dcm", b"C:\\x.dcm", b"x" * 300 + b".dcm",
          b"s/\x00.dcm", b"s/1.dcm/2.dcm", b"", b".", b"s/", b"\xff\xfe.dcm")


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Lie in one field of a local header, a central header or the end record, or replace
    an entry's name."""
    buf = bytearray(data)
    kind = rng.choice((b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"))
    spots = [i for i in range(len(buf)) if buf.startswith(kind, i)]
    if not spots:
        return mutate_bytes(data, rng)
    at = rng.choice(spots)
    fields = {b"PK\x03\x04": _LOCAL, b"PK\x01\x02": _CENTRAL, b"PK\x05\x06": _END}[kind]
    if kind != b"PK\x05\x06" and rng.random() < 0.3:  # a hostile name, lengths kept right
        name_at = at + (30 if kind == b"PK\x03\x04" else 46)
        len_at = at + fields["name_len"][0]
        old_len = struct.unpack_from("<H", buf, len_at)[0]
        name = rng.choice(_NAMES)
        buf[name_at:name_at + old_len] = name
        struct.pack_into("<H", buf, len_at, len(name))
        return bytes(buf)
    offset, code = fields[rng.choice(sorted(fields))]
    width = struct.calcsize(code)
    value = rng.choice(_VALUES)
    if kind == b"PK\x01\x02" and offset == 38 and rng.random() < 0.5:
        value = (0o120777 << 16) if rng.random() < 0.5 else (0o040755 << 16)  # link, folder
    if at + offset + width <= len(buf):
        struct.pack_into("<" + code, buf, at + offset, value & ((1 << (8 * width)) - 1))
    return bytes(buf)


FAMILY = Family(name="upload", suffix=".zip", seeds=_seeds, target=target, mutate=mutate)
