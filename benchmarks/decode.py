"""Image decoding per dataset and size class: what ``prepare`` runs against plain decoders.

The files are decoded to the size ``prepare`` stores (page cache warm), one table per size
class of the real release (docs/benchmarks.md says where each distribution comes from):

- PCam: 96 x 96 uncompressed RGB TIFFs (the dataset's demo generator, the release's format);
- ISIC 2020: JPEG photographs at the release's common sizes, 480 x 640 to 4000 x 6000, each
  with the demo's dermoscopy-like content plus fine noise so that the entropy-coded data is
  not unrealistically small; decoded to the 500 px reference size;
- BreakHis: 460 x 700 PNGs (the dataset's demo generator).

Rows, the first ours:

- ``oncopipe``: ``imagedump.decode_batch`` over batches of ``imagedump.batch_size`` files,
  exactly what ``prepare``'s workers run (every check included);
- OpenCV: ``imread`` full, and for JPEG at the same 1/2^k scale as ours (``IMREAD_REDUCED_*``),
  then the same area resize, ``cvtColor`` and a channel-first copy;
- PIL: ``Image.open``, ``draft`` for JPEG (its reduced-scale decode), bilinear ``resize``;
- simplejpeg (``min_height``/``min_width``: its own reduced-scale choice) and PyTurboJPEG (the
  smallest of libjpeg-turbo's M/8 scales that keeps the output size), JPEG only, then the
  same resize. A peer whose library is missing has no row; the table's note says why.

Outputs are checked by their mean absolute difference from ours in grey levels (different
decoders' scaled IDCTs and resampling filters cannot agree exactly).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from benchmarks.harness import Comparison, Method, same_array
from oncopipe import datasets
from oncopipe.datasets.breakhis.prepare import decode_spec as breakhis_decode
from oncopipe.datasets.isic.demo import _photo
from oncopipe.imagefiles import imagedump
from oncopipe.imagefiles.imagedump import Decode
from oncopipe.imagefiles.images import image_size

SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png")
MEAN_ABS_GREY = 4.0  # agreement: mean |difference| from ours, in grey levels of 255
ISIC_SIZE = 500  # the reference recipe's output side
# (height, width) of the ISIC 2020 size classes, and the files of each in one call
ISIC_CLASSES = {(480, 640): 48, (768, 1024): 24, (1053, 1872): 12, (2448, 3264): 6,
                (4000, 6000): 3}
JPEG_QUALITY = 90  # the demo generator's
NOISE = 6  # +- grey levels of fine noise on the synthetic photographs (skin texture, sensor)
_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}

Decoder = Callable[[Path], np.ndarray]  # one file -> (3, H, W) uint8 RGB


def image_files(root: Path, limit: int) -> list[Path]:
    """Up to ``limit`` image files under ``root``, evenly spread over the sorted listing."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    if len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).astype(int)]
    return files


def _finish(rgb: np.ndarray, spec: Decode) -> np.ndarray:
    """An (H, W, 3) RGB decode -> ``spec``'s crop and size, channel-first, contiguous."""
    if spec.fit == "center_crop":
        h, w = rgb.shape[:2]
        side = min(h, w)
        rgb = rgb[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    height, width = spec.size
    if rgb.shape[:2] != (height, width):
        shrink = rgb.shape[0] >= height and rgb.shape[1] >= width
        rgb = cv2.resize(rgb, (width, height),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def _factor(hw: tuple[int, int], min_side: int | None) -> int:
    """The 1/2^k scale ours decodes a JPEG of ``hw`` at (as ``images.decode`` chooses)."""
    if min_side:
        for factor in (8, 4, 2):
            if min(hw) // factor >= min_side:
                return factor
    return 1


def opencv(spec: Decode, reduce: bool) -> Decoder:
    def run(path: Path) -> np.ndarray:
        factor = _factor(image_size(path), max(spec.size)) if reduce else 1
        bgr = cv2.imread(str(path), _REDUCED[factor])
        height, width = spec.size
        if spec.fit == "center_crop":
            return _finish(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), spec)
        if bgr.shape[:2] != (height, width):
            shrink = bgr.shape[0] >= height and bgr.shape[1] >= width
            bgr = cv2.resize(bgr, (width, height),
                             interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).transpose(2, 0, 1))
    return run


def pil(spec: Decode) -> Decoder:
    height, width = spec.size

    def run(path: Path) -> np.ndarray:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (width, height))  # scale chosen so the result is >= the request
            rgb = img.convert("RGB")
        if spec.fit == "center_crop":
            w, h = rgb.size
            side = min(w, h)
            rgb = rgb.crop(((w - side) // 2, (h - side) // 2,
                            (w - side) // 2 + side, (h - side) // 2 + side))
        if rgb.size != (width, height):
            rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
        return np.ascontiguousarray(np.asarray(rgb).transpose(2, 0, 1))
    return run


def simplejpeg_peer(spec: Decode) -> Decoder | str:
    """simplejpeg's decode at its own reduced scale, or why there is no row."""
    try:
        import simplejpeg
    except ImportError:
        return "simplejpeg: not installed (pip install -e '.[bench]')"
    side = max(spec.size)

    def run(path: Path) -> np.ndarray:
        rgb = simplejpeg.decode_jpeg(path.read_bytes(), "RGB", min_height=side, min_width=side)
        return _finish(rgb, spec)
    return run


def turbojpeg_peer(spec: Decode) -> Decoder | str:
    """PyTurboJPEG at the smallest M/8 scale that keeps the output size, or why no row."""
    try:
        import turbojpeg
        tj = turbojpeg.TurboJPEG()
    except ImportError:
        return "PyTurboJPEG: not installed (pip install -e '.[bench]')"
    except (OSError, RuntimeError) as exc:  # the Python package without its C library
        return (f"PyTurboJPEG: {str(exc).splitlines()[0]} (Debian/Ubuntu: apt-get install "
                "libturbojpeg0)")
    side = max(spec.size)
    # scales up to 1 (its 9/8 to 2 scales would enlarge in the IDCT, not decode less)
    factors = sorted((f for f in tj.scaling_factors if f[0] <= f[1]), key=lambda f: f[0] / f[1])

    def run(path: Path) -> np.ndarray:
        data = path.read_bytes()
        width, height, _, _ = tj.decode_header(data)
        scale = next(((n, d) for n, d in factors
                      if -(-height * n // d) >= side and -(-width * n // d) >= side), (1, 1))
        rgb = tj.decode(data, pixel_format=turbojpeg.TJPF_RGB, scaling_factor=scale)
        return _finish(rgb, spec)
    return run


def ours(files: list[Path], spec: Decode) -> Callable[[], np.ndarray]:
    """``prepare``'s worker function over the files, in its batches."""
    paths = [str(p) for p in files]
    size = imagedump.batch_size(spec)

    def run() -> np.ndarray:
        out = []
        for i in range(0, len(paths), size):
            out += [img for img, _, _ in imagedump.decode_batch((paths[i:i + size], spec))]
        return np.stack(out)
    return run


# why each peer can come out faster than ours (printed under a table where it does)
SAME_DECODER = ("the same OpenCV decode as ours without the checks every file gets in "
                "`prepare` (header, size limits, JPEG end marker, codec messages: tens of "
                "microseconds a file); a larger gap is the load moving between rounds "
                "(compare the median and best columns).")
TURBO_API = ("the same libjpeg-turbo decode as ours, at the same scale here with identical "
             "pixels, called through the TurboJPEG API (the whole image in one call, RGB "
             "out); OpenCV's JPEG reader, which ours uses, costs more per image. Ours keeps "
             "OpenCV: one decoder for JPEG, PNG and TIFF with the codec's damaged-data "
             "warnings, and no extra dependency.")
M_OVER_8 = (" Where its output differs from ours it decoded at an M/8 scale (3/8, 5/8, 6/8, "
            "...), which OpenCV's reduced modes (1/2, 1/4, 1/8) do not offer, so it also "
            "decodes fewer pixels.")
RAW_TIFF = ("ours runs no decoder for these files (their pixels are the file's bytes), but "
            "reads the TIFF directory in Python, per file, where OpenCV's libtiff does it in "
            "C; the two cost about the same per 96 x 96 patch, and a ratio this close to 1 is "
            "within the rounds' spread.")
WHY = {"opencv": SAME_DECODER, "opencv-tiff": RAW_TIFF, "simplejpeg": TURBO_API + M_OVER_8,
       "turbojpeg": TURBO_API + M_OVER_8,
       "pil": ("PIL decodes with libjpeg-turbo at the same reduced scale (`draft`), straight "
               "to RGB, through a reader that costs less per image than OpenCV's, which ours "
               "uses; its bilinear resize also differs from ours (see the last column).")}


def comparison(key: str, title: str, spec: Decode, files: list[Path]) -> Comparison:
    jpeg = files[0].suffix.lower() in (".jpg", ".jpeg")
    check = same_array(mean_abs=MEAN_ABS_GREY)
    tiff = files[0].suffix.lower() in (".tif", ".tiff")
    peers: list[tuple[str, str, Decoder | str]] = [
        ("OpenCV `imread`, full decode", "opencv-tiff" if tiff else "opencv",
         opencv(spec, False))]
    if jpeg:
        peers += [("OpenCV `imread`, same reduced scale (`IMREAD_REDUCED_*`)", "opencv",
                   opencv(spec, True)),
                  ("PIL, `draft` (reduced scale) + bilinear resize", "pil", pil(spec)),
                  ("simplejpeg, its reduced scale", "simplejpeg", simplejpeg_peer(spec)),
                  ("PyTurboJPEG, smallest M/8 scale", "turbojpeg", turbojpeg_peer(spec))]
    else:
        peers += [("PIL + bilinear resize", "pil", pil(spec))]
    methods = [Method("oncopipe (`imagedump.decode_batch`, as `prepare`)", ours(files, spec))]
    missing = []
    for name, kind, peer in peers:
        if isinstance(peer, str):
            missing.append(peer)
        else:
            methods.append(Method(name, lambda peer=peer: np.stack([peer(p) for p in files]),
                                  check, WHY[kind]))
    note = "" if jpeg else ("No rows for OpenCV's reduced modes, simplejpeg or PyTurboJPEG: "
                            "they are for JPEG only.")
    if missing:
        note = " ".join([note, "No row for: " + "; ".join(missing) + "."]).strip()
    if jpeg:
        note = " ".join([note, f"Versions: {_versions()}."]).strip()
    mean_kb = np.mean([p.stat().st_size for p in files]) / 1024
    height, width = spec.size
    return Comparison(key, f"{title}, mean file {mean_kb:,.0f} KB -> {height}x{width} "
                           f"({spec.fit})", "image", len(files), methods, note)


def _versions() -> str:
    """The JPEG peers' versions (the page's environment line lists the others)."""
    found = []
    for name in ("simplejpeg", "PyTurboJPEG"):
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def _config(name: str, work: Path, demo: dict):
    cfg = datasets.load_config(name)
    cfg = dataclasses.replace(cfg, raw=work / name, demo=dataclasses.replace(cfg.demo, **demo))
    if not cfg.raw.exists():
        cfg.raw.mkdir(parents=True)
        datasets.spec(name).write_demo(cfg, cfg.raw)
    return cfg


def isic_photos(folder: Path, hw: tuple[int, int], n: int) -> list[Path]:
    """``n`` JPEG photographs of ``hw`` (height, width): the demo's lesions plus fine noise."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        rng = np.random.default_rng([hw[0], hw[1], i])
        rgb = _photo(rng, bool(i % 2), hw, f"IP_{1000 + 137 * i}")
        tile = rng.integers(-NOISE, NOISE + 1, (256, 256, 3), dtype=np.int16)
        reps = (-(-hw[0] // 256), -(-hw[1] // 256), 1)
        noisy = rgb + np.tile(tile, reps)[:hw[0], :hw[1]]
        bgr = cv2.cvtColor(np.clip(noisy, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
        _, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        path = folder / f"ISIC_{hw[0]}x{hw[1]}_{i:03d}.jpg"
        path.write_bytes(buf.tobytes())
        files.append(path)
    return files


def comparisons(work: Path, quick: bool) -> list[Comparison]:
    pcam = _config("pcam", work, {"n_train": 20 if quick else 400, "n_test": 0})
    breakhis = _config("breakhis", work, {"patients_per_subtype": 2})
    cases = [("decode-pcam", "PCam patches, 96x96 uncompressed TIFF",
              Decode(size=(96, 96), expect=(96, 96), reduced=False),
              image_files(pcam.raw / "train", 6 if quick else 400))]
    isic = Decode(size=(ISIC_SIZE, ISIC_SIZE))
    for (h, w), n in ISIC_CLASSES.items():
        files = isic_photos(work / "isic" / f"{h}x{w}", (h, w), 1 if quick else n)
        cases.append((f"decode-isic-{h}x{w}", f"ISIC photographs {h}x{w} JPEG", isic, files))
    cases.append(("decode-breakhis", "BreakHis fields, 460x700 PNG",
                  breakhis_decode(dataclasses.replace(breakhis.prepare, image_size=224)),
                  image_files(breakhis.raw, 6 if quick else 96)))
    return [comparison(*case) for case in cases]
