"""What DVC's first look at a large raw folder costs: hashing every file of a dependency.

A stage that depends on a raw download (``${lidc.raw}`` in dvc.yaml) makes DVC compute the
MD5 of every file in it the first time it is asked (``dvc status`` / ``dvc repro``); later
calls reuse the hashes from its state database as long as size, mtime and inode are
unchanged. This script writes ``--gb`` GB of DICOM-sized files (``--file-kb`` KB each, the
size of a 512 x 512 int16 slice) into a scratch DVC project with one stage depending on
them, times the first ``dvc repro`` (which hashes them), a ``dvc status`` after it (state
database hit) and one after every file's mtime changed (what a fresh download, or a new
clone on another machine, costs), and removes everything::

    python -m benchmarks.dvc_hashing --gb 4

The page cache is warm (the files were just written), so the first figure is DVC's hashing
rate, not the disk's; a real download read cold is bounded by the slower of the two.
Results are printed (docs/pipeline.md, "Hashing a large raw folder", quotes two runs).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def dvc(root: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run(["dvc", *args], cwd=root, check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=4.0,
                    help="size of the generated raw folder, GB (default 4)")
    ap.add_argument("--file-kb", type=int, default=514,
                    help="size of each file, kB (default 514: a LIDC slice)")
    ap.add_argument("--dir", type=Path, default=None, help="scratch parent (default: TMPDIR)")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="oncopipe-hash-", dir=args.dir))
    try:
        raw = root / "raw"
        n = int(args.gb * 1e9 // (args.file_kb * 1024))
        block = os.urandom(args.file_kb * 1024)  # incompressible, like noisy CT
        for i in range(n):
            series = raw / f"LIDC-IDRI-{i // 2000:04d}" / f"series-{i // 200:05d}"
            if i % 200 == 0:
                series.mkdir(parents=True)
            (series / f"{i:06d}.dcm").write_bytes(i.to_bytes(8, "little") + block[8:])
        size = sum(f.stat().st_size for f in raw.rglob("*.dcm"))
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        dvc(root, "init", "-q")
        (root / "dvc.yaml").write_text("stages:\n  read:\n    cmd: ls raw > listing\n"
                                       "    deps:\n      - raw\n    outs:\n      - listing\n")
        start = time.perf_counter()
        digest = hashlib.md5()
        for f in sorted(raw.rglob("*.dcm"))[:2000]:
            digest.update(f.read_bytes())
        md5_rate = min(2000, n) * args.file_kb * 1024 / (time.perf_counter() - start)
        first = dvc(root, "repro")  # hashes every file of raw/ to write dvc.lock
        again = dvc(root, "status")  # hashes from DVC's state database
        for f in raw.rglob("*.dcm"):  # new mtimes: as a fresh download or another machine
            os.utime(f)
        fresh = dvc(root, "status")
        print(f"{n} files, {size / 1e9:.2f} GB: first `dvc repro` {first:.1f} s "
              f"({size / first / 1e6:.0f} MB/s); `dvc status` then {again:.1f} s; after "
              f"touching every file {fresh:.1f} s, i.e. hashing {fresh - again:.1f} s "
              f"({size / (fresh - again) / 1e6:.0f} MB/s); "
              f"plain hashlib.md5 in one process {md5_rate / 1e6:.0f} MB/s")
        lidc = 124e9
        print(f"at that rate the 124 GB LIDC-IDRI download: first look about "
              f"{lidc / (size / (fresh - again)) / 60:.0f} min of hashing")
    finally:
        shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
