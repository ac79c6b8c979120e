"""Compressed DICOM: which pixel-data plugin decodes what, how fast, and whether it is exact.

Two measurements, printed as Markdown tables (pasted into docs/lidc.md):

1. **Coverage** over every compressed file of pydicom's test files and the ``pydicom-data``
   package: per transfer syntax, how many files each plugin decodes (pylibjpeg with its
   libjpeg / openjpeg / rle plugins, GDCM, Pillow, pydicom's own RLE decoder).
2. **Speed and exactness** on one real 512 x 512 CT slice (``693_UNCR.dcm``, 14-bit signed,
   from ``pydicom-data``) transcoded by GDCM into each syntax a CT archive uses: JPEG
   Lossless SV1, JPEG-LS lossless and near-lossless, JPEG 2000 lossless, RLE, and an 8-bit
   JPEG Baseline version of it; 12-bit JPEG Extended is pydicom's ``JPGExtended.dcm``
   (1024 x 256; GDCM writes 12-bit data as an invalid 16-bit lossy stream). Median decode
   time of ``--repeat`` runs (ms, one core); "exact" compares with the uncompressed source
   (lossless syntaxes) or, for lossy ones, gives the max |error| against the source and the
   max difference between plugins, in stored values.

Needs the ``bench`` extra plus ``python-gdcm`` (for the transcoding). Usage::

    python benchmarks/dicom_decoders.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import gdcm
import numpy as np
import pydicom
from pydicom.data.data_manager import DATA_ROOT, external_data_sources
from pydicom.pixels import get_decoder
from pydicom.uid import UID

PLUGINS = ("pylibjpeg", "gdcm", "pillow", "pydicom")


def decode(ds: pydicom.Dataset, plugin: str) -> np.ndarray:
    return get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, decoding_plugin=plugin)[0]


def corpus() -> list[Path]:
    """Listed from the folders (get_testdata_files would try to download more files)."""
    folders = [Path(DATA_ROOT) / "test_files",
               Path(external_data_sources()["pydicom-data"].data_path)]
    return sorted(p for folder in folders for p in folder.glob("*.dcm"))


def coverage() -> str:
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for path in corpus():
        try:
            ds = pydicom.dcmread(path)
            tsyntax = UID(ds.file_meta.TransferSyntaxUID)
        except Exception:  # not a DICOM file with a meta header: not a decoder question
            continue
        if not tsyntax.is_compressed or "PixelData" not in ds:
            continue
        row = table[tsyntax.name]
        row["files"] += 1
        decoder = get_decoder(tsyntax)
        for plugin in PLUGINS:
            if plugin not in decoder.available_plugins:
                continue
            try:
                decode(ds, plugin)
                row[plugin] += 1
            except Exception:
                pass
    lines = ["| transfer syntax | files | " + " | ".join(PLUGINS) + " |",
             "| --- | ---: |" + " ---: |" * len(PLUGINS)]
    for name, row in sorted(table.items()):
        cells = [str(row[p]) if row[p] or p in get_plugins(name) else "-" for p in PLUGINS]
        lines.append(f"| {name} | {row['files']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def get_plugins(name: str) -> set[str]:
    uid = next(u for u in _all_syntaxes() if u.name == name)
    return set(get_decoder(uid).available_plugins)


def _all_syntaxes() -> list[UID]:
    from pydicom.uid import AllTransferSyntaxes
    return [UID(u) for u in AllTransferSyntaxes]


def _transcode(src: Path, dst: Path, syntax: int, near_lossless: bool = False) -> None:
    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    if not reader.Read():
        raise RuntimeError(f"gdcm cannot read {src}")
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(syntax))
    change.SetInput(reader.GetImage())
    if near_lossless:
        codec = gdcm.JPEGLSCodec()
        codec.SetLossless(False)
        codec.SetLossyError(2)
        change.SetUserCodec(codec)
    if not change.Change():
        raise RuntimeError(f"gdcm cannot transcode {src}")
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise RuntimeError(f"gdcm cannot write {dst}")


def _with_bits(src: Path, dst: Path, bits: int) -> None:
    """The CT slice as unsigned ``bits``-bit data (HU kept through the intercept)."""
    ds = pydicom.dcmread(src)
    raw = ds.pixel_array.astype(np.int32)
    if bits == 8:
        stored = np.clip((raw + 1024) // 8, 0, 255).astype(np.uint8)  # 8 HU per step
        ds.BitsAllocated, ds.RescaleSlope = 8, 8
    else:
        stored = np.clip(raw + 1024, 0, 4095).astype(np.uint16)
        ds.BitsAllocated, ds.RescaleSlope = 16, 1
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    ds.RescaleIntercept = -1024 + float(ds.RescaleIntercept)
    for tag in ("PixelPaddingValue", "SmallestImagePixelValue", "LargestImagePixelValue"):
        if tag in ds:
            del ds[tag]
    ds.PixelData = stored.tobytes()
    ds.save_as(dst, enforce_file_format=True)


def speed(repeat: int) -> str:
    t = gdcm.TransferSyntax
    src = Path(external_data_sources()["pydicom-data"].data_path) / "693_UNCR.dcm"
    lines = ["| syntax (512 x 512 CT) | bytes | " + " | ".join(PLUGINS) + " | exact |",
             "| --- | ---: |" + " ---: |" * len(PLUGINS) + " --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _with_bits(src, work / "u8.dcm", 8)
        cases = [("JPEG Lossless SV1", src, t.JPEGLosslessProcess14_1, False, True),
                 ("JPEG-LS lossless", src, t.JPEGLSLossless, False, True),
                 ("JPEG-LS near-lossless (error 2)", src, t.JPEGLSNearLossless, True, False),
                 ("JPEG 2000 lossless", src, t.JPEG2000Lossless, False, True),
                 ("RLE lossless", src, t.RLELossless, False, True),
                 ("JPEG Baseline 8-bit", work / "u8.dcm", t.JPEGBaselineProcess1, False, False),
                 ("JPEG Extended 12-bit (1024 x 256 NM)", None, None, False, False)]
        for i, (name, base, syntax, near, lossless) in enumerate(cases):
            if base is None:
                ds = pydicom.dcmread(Path(DATA_ROOT) / "test_files" / "JPGExtended.dcm")
                reference = None
            else:
                out = work / f"{i}.dcm"
                _transcode(base, out, syntax, near)
                ds = pydicom.dcmread(out)
                reference = pydicom.dcmread(base).pixel_array
            cells, arrays = [], {}
            for plugin in PLUGINS:
                if plugin not in get_decoder(ds.file_meta.TransferSyntaxUID).available_plugins:
                    cells.append("-")
                    continue
                try:
                    arrays[plugin] = decode(ds, plugin)
                except Exception:
                    cells.append("fails")
                    continue
                times = []
                for _ in range(repeat):
                    start = time.perf_counter()
                    decode(ds, plugin)
                    times.append(time.perf_counter() - start)
                cells.append(f"{np.median(times) * 1e3:.1f} ms")
            if lossless:
                exact = "all equal to source" if all(
                    np.array_equal(a, reference) for a in arrays.values()) else "DIFFERS"
            else:
                vals = list(arrays.values())
                spread = max((int(np.abs(a.astype(np.int64) - vals[0]).max()) for a in vals),
                             default=0)
                err = ("?" if reference is None or not vals
                       else int(np.abs(vals[0].astype(np.int64) - reference).max()))
                exact = f"lossy: max error {err}, plugins differ by <= {spread}"
            lines.append(f"| {name} | {len(ds.PixelData):,} | " + " | ".join(cells)
                         + f" | {exact} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20,
                        help="decodes per syntax and plugin, median reported (default 20)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print("## Coverage (pydicom test files + pydicom-data, compressed files)\n")
    print(coverage())
    print("\n## Speed and exactness\n")
    print(speed(args.repeat))


if __name__ == "__main__":
    main()
