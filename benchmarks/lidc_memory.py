"""``lidc_lesions`` peak memory against the number of DICOM files.

The lesion table is built from headers only, and each series' slices wait on disk until the
slice table is written by row groups, so its memory should not grow with the number of files.
This benchmark writes LIDC-like
raw trees of tiny CT slices (8 x 8 pixels, 100 slices per series, one reader XML with one
nodule per series; every file kept), from one template file whose UIDs, position and instance
number are patched per copy (so 100,000 files take seconds to write), and runs
``lesions.build_tables`` on each tree in a fresh process (headers read in that process,
``workers: 0``) and writes its slice table as the stage does, reporting the process's peak
resident memory (VmHWM), the part taken by the imports, the growth per file against the
smallest tree, and the peak projected for the whole collection.

    python -m benchmarks --only lidc_memory        # table into docs/benchmarks.md
    python benchmarks/lidc_memory.py --files 1000 100000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the harness

from benchmarks import harness  # noqa: E402

FILE_COUNTS = (1_000, 10_000, 100_000)
SLICES_PER_SERIES = 100
REPEATS = 1  # peak memory barely varies between runs; 7 runs of 100,000 files take ~45 min
_ROOT_UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001."
# fixed-width placeholders, replaced byte for byte in each copy (same length: offsets hold)
_SOP, _SERIES, _STUDY = (_ROOT_UID + c * 24 for c in "789")
_Z, _INSTANCE, _PATIENT = "55555.55", "666666", "LIDC-IDRI-5555"
_XML = """<?xml version="1.0" encoding="UTF-8"?>
<LidcReadMessage xmlns="http://www.nih.gov"><ResponseHeader>
<SeriesInstanceUid>{series}</SeriesInstanceUid><StudyInstanceUID>{study}</StudyInstanceUID>
</ResponseHeader><readingSession><unblindedReadNodule><noduleID>1</noduleID>
<characteristics><subtlety>3</subtlety><malignancy>3</malignancy></characteristics>
<roi><imageZposition>{z}</imageZposition><imageSOP_UID>{sop}</imageSOP_UID>
<inclusion>TRUE</inclusion>{points}</roi></unblindedReadNodule></readingSession>
</LidcReadMessage>
"""
_POINTS = "".join(f"<edgeMap><xCoord>{x}</xCoord><yCoord>{y}</yCoord></edgeMap>"
                  for x, y in ((3, 2), (5, 3), (5, 5), (3, 6), (2, 4)))


def _template() -> bytes:
    """One 8 x 8 CT slice as LIDC stores it, with the placeholders above."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = _SOP
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, _SOP
    ds.Modality, ds.PatientID = "CT", _PATIENT
    ds.StudyInstanceUID, ds.SeriesInstanceUID = _STUDY, _SERIES
    ds.InstanceNumber = _INSTANCE
    ds.ImagePositionPatient = ["-6.0", "-6.0", _Z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [1.5, 1.5], 2.5
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = np.arange(64, dtype="<i2").tobytes()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _uid(kind: str, n: int) -> str:
    return _ROOT_UID + kind + f"{n:023d}"


def write_tree(root: Path, n_files: int) -> Path:
    """A raw tree of ``n_files`` slices (whole series of :data:`SLICES_PER_SERIES`) plus one
    XML per series, written once and reused."""
    done = root / f"{n_files}.done"
    tree = root / str(n_files)
    if done.is_file():
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    template = _template()
    for s in range(n_files // SLICES_PER_SERIES):
        series, study = _uid("2", s), _uid("3", s)
        folder = tree / f"LIDC-IDRI-{s:04d}" / f"01-01-2000-{s:05d}" / f"3000566-{s:05d}"
        folder.mkdir(parents=True)
        head = (template.replace(_SERIES.encode(), series.encode())
                .replace(_STUDY.encode(), study.encode())
                .replace(_PATIENT.encode(), f"LIDC-IDRI-{s % 10_000:04d}".encode()))
        for k in range(SLICES_PER_SERIES):
            data = (head.replace(_SOP.encode(), _uid("1", s * SLICES_PER_SERIES + k).encode())
                    .replace(_Z.encode(), f"{k * 2.5:08.2f}".encode())
                    .replace(_INSTANCE.encode(), f"{k + 1:06d}".encode()))
            (folder / f"{k + 1:06d}.dcm").write_bytes(data)
        k = SLICES_PER_SERIES // 2
        (folder / "069.xml").write_text(_XML.format(
            series=series, study=study, z=f"{k * 2.5:.2f}",
            sop=_uid("1", s * SLICES_PER_SERIES + k), points=_POINTS))
    done.touch()
    return tree


# ru_maxrss survives fork + exec (a child starts with its parent's peak): read VmHWM instead.
_CHILD = """
import json, re, sys, tempfile, time
from pathlib import Path
import pyarrow.parquet as pq
from oncopipe.datasets.lidc import lesions
from oncopipe.datasets.lidc.params import PrepareParams
def peak():
    status = open("/proc/self/status").read()
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
base = peak()
start = time.perf_counter()
table, slices, report = lesions.build_tables(Path(sys.argv[1]), PrepareParams(workers=0), "h")
with tempfile.TemporaryDirectory() as tmp:  # the slice table, written as the stage does
    slices.write(Path(tmp) / "lesions_slices.parquet")
    n_slices = pq.read_metadata(Path(tmp) / "lesions_slices.parquet").num_rows
slices.close()
print(json.dumps([base, peak(), time.perf_counter() - start, len(table), n_slices]))
"""


def measure(tree: Path) -> tuple[int, int, float, int, int]:
    """(imports kB, peak kB, seconds, lesions, slice rows) of ``build_tables`` on ``tree``."""
    out = subprocess.run([sys.executable, "-c", _CHILD, str(tree)], check=True,
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    return tuple(json.loads(out.stdout.strip().splitlines()[-1]))


def run(repeats: int = 1, files: tuple[int, ...] = FILE_COUNTS,
        workdir: Path | None = None) -> list[dict]:
    """One row per tree size; ``repeats`` runs each, the highest peak kept."""
    workdir = Path(workdir or os.environ.get("ONCOPIPE_BENCH_DIR", "/tmp/oncopipe-bench-lidc"))
    root = workdir / "memory"
    root.mkdir(parents=True, exist_ok=True)
    trees = {n: write_tree(root, n) for n in files}

    def build() -> list[dict]:
        rows = []
        for n, tree in trees.items():
            runs = [measure(tree) for _ in range(max(1, repeats))]
            base, peak, _, n_lesions, n_slices = max(runs, key=lambda r: r[1])
            if n_slices != n:
                raise SystemExit(f"{tree}: {n_slices} slice rows for {n} files")
            rows.append({"benchmark": "lidc_lesions peak memory", "method": "oncopipe",
                         "files": n, "series": n // SLICES_PER_SERIES, "lesions": n_lesions,
                         "peak_rss_mb": round(peak / 1024), "imports_rss_mb": round(base / 1024),
                         "seconds": round(min(r[2] for r in runs), 1),
                         "size": f"8 x 8 slices, {SLICES_PER_SERIES} per series"})
        first = rows[0]
        for row in rows:
            grown = (row["peak_rss_mb"] - first["peak_rss_mb"]) * 1024 * 1024
            row["vs_smallest"] = f"{row['peak_rss_mb'] / first['peak_rss_mb']:.2f}x"
            row["bytes_per_file"] = (round(grown / (row["files"] - first["files"]))
                                     if row["files"] > first["files"] else 0)
        return rows

    return harness.load_stamped(build)


COLUMNS = [harness.Column("files", "{files:,}"), harness.Column("series", "{series:,}"),
           harness.Column("peak RSS (MB)", "{peak_rss_mb}"),
           harness.Column("of which imports (MB)", "{imports_rss_mb}"),
           harness.Column("peak / smallest", "{vs_smallest}"),
           harness.Column("growth per file (bytes)", "{bytes_per_file}"),
           harness.Column("time (s)", "{seconds}")]


COLLECTION_FILES = 244_527  # DICOM files in LIDC-IDRI (TCIA's collection page)


def projection(rows: list[dict]) -> str:
    """Peak memory for the whole collection, extrapolated linearly from the smallest and the
    largest tree."""
    first, last = rows[0], rows[-1]
    if last["files"] == first["files"]:
        return ""
    per_file = (last["peak_rss_mb"] - first["peak_rss_mb"]) / (last["files"] - first["files"])
    at = first["peak_rss_mb"] + per_file * (COLLECTION_FILES - first["files"])
    return (f"Projected for the whole collection ({COLLECTION_FILES:,} DICOM files), "
            f"linearly from the {first['files']:,}- and {last['files']:,}-file runs: "
            f"{at:,.0f} MB ({at / first['peak_rss_mb']:.2f}x the {first['files']:,}-file run).")


def table(rows: list[dict]) -> str:
    text = harness.grouped_tables(rows, lambda _: COLUMNS, size_in_caption=True)
    line = projection(rows)
    return f"{text.rstrip()}\n\n{line}" if line else text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, nargs="+", default=list(FILE_COUNTS),
                    help="tree sizes, in files (multiples of 100; default 1000 10000 100000)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=None,
                    help="where the trees are written once and reused (default "
                         "$ONCOPIPE_BENCH_DIR or /tmp/oncopipe-bench-lidc)")
    args = ap.parse_args()
    print(table(run(args.repeats, tuple(args.files), args.dir)))


if __name__ == "__main__":
    main()
