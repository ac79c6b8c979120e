"""Synthetic BreakHis v1: the real tree and names, 700 x 460 RGB PNGs, learnable tissue.

Layout and names follow the archive exactly (``BreaKHis_v1/histology_slides/breast/<benign|
malignant>/SOB/<subtype>/SOB_<B|M>_<code>_<yy>-<slide>/<mag>X/SOB_<B|M>_<code>-<yy>-<slide>-
<mag>-<nnn>.png``); ``layout: kaggle`` adds the Kaggle mirror's extra ``BreaKHis_v1/`` level
and its ``Folds.csv``. The quirks a loader must survive are always present: a year-15 patient
(``15-190EF``), slide ``14-13412`` under both ductal and lobular carcinoma, and letter-suffixed
slides of one number as separate folders (``14-22549AB``, ``14-22549CD``).

The tissue is drawn as H&E-like fields: pink stroma, white lumens lined by nuclei (glands) and
scattered nuclei. Benign subtypes have small, regular, pale nuclei and many glands; malignant
ones have larger, darker, pleomorphic nuclei crowded in sheets, so benign vs malignant is
learnable even at 64 x 64. Each subtype has its own mix, and each patient its own stain tint
(as real slides do), so a patient-level split is a real generalisation test. Higher
magnifications show fewer, larger structures. Every image has its own RNG seeded from
(seed, patient, magnification, sequence), and PNGs are encoded by OpenCV: same seed, same bytes.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from oncopipe.core.atomic import write_bytes, write_text
from oncopipe.core.config import DatasetConfig
from oncopipe.datasets.breakhis.params import MAGNIFICATIONS, SUBTYPES

HEIGHT, WIDTH = 460, 700  # the size of (nearly) every image of the release
# file-name code -> subtype folder, benign first. Written out here rather than imported from
# naming.py: the demo is the independent writer of the convention that naming.py parses.
CODES: dict[str, str] = dict(zip(("A", "F", "PT", "TA", "DC", "LC", "MC", "PC"), SUBTYPES,
                                 strict=True))
BENIGN = ("A", "F", "PT", "TA")


@dataclass(frozen=True)
class _Name:
    """One image of the tree: where it lies and what it is called."""

    code: str
    year: str
    slide: str
    magnification: int
    seq: int

    @property
    def folder(self) -> str:
        return f"SOB_{self._letter}_{self.code}_{self.year}-{self.slide}"

    @property
    def file_name(self) -> str:
        return (f"SOB_{self._letter}_{self.code}-{self.year}-{self.slide}"
                f"-{self.magnification}-{self.seq:03d}.png")

    @property
    def _letter(self) -> str:
        return "B" if self.code in BENIGN else "M"

    def parts(self) -> tuple[str, ...]:
        """Path relative to ``histology_slides/breast``."""
        tumor = "benign" if self.code in BENIGN else "malignant"
        return (tumor, "SOB", CODES[self.code], self.folder, f"{self.magnification}X",
                self.file_name)


@dataclass(frozen=True)
class _Style:
    """How one subtype looks at 40X (sizes in pixels)."""

    nucleus_radius: float
    pleomorphism: float  # relative spread of nucleus size and shape
    nuclei: int  # scattered nuclei per field
    glands: int  # gland (lumen ringed by nuclei) count per field
    gland_radius: float
    darkness: float  # 0 pale .. 1 hyperchromatic
    mucin: float  # fraction of the field in pale-blue mucin pools


_STYLES: dict[str, _Style] = {
    "A": _Style(3.0, 0.15, 250, 26, 16, 0.35, 0.0),   # adenosis: many small glands
    "F": _Style(3.0, 0.15, 180, 8, 28, 0.30, 0.0),    # fibroadenoma: stroma, few slit glands
    "PT": _Style(3.5, 0.20, 520, 5, 30, 0.40, 0.0),   # phyllodes: cellular stroma
    "TA": _Style(3.0, 0.15, 200, 40, 11, 0.35, 0.0),  # tubular adenoma: packed tubules
    "DC": _Style(6.5, 0.45, 1500, 2, 22, 0.85, 0.0),  # ductal: dense pleomorphic sheets
    "LC": _Style(5.5, 0.35, 1100, 0, 0, 0.75, 0.0),   # lobular: discohesive, in files
    "MC": _Style(6.0, 0.40, 900, 0, 0, 0.80, 0.35),   # mucinous: clusters in mucin
    "PC": _Style(6.0, 0.40, 1200, 4, 26, 0.80, 0.0),  # papillary: fronds and sheets
}
_MAG_SCALE = {40: 1.0, 100: 1.6, 200: 2.3, 400: 3.2}
# Quirk patients (code, year, slide); the remaining folders get random slide numbers.
_QUIRKS: tuple[tuple[str, str, str], ...] = (
    ("A", "14", "22549AB"),
    ("A", "14", "22549CD"),
    ("DC", "14", "13412"),
    ("LC", "14", "13412"),
    ("MC", "15", "190EF"),
)


def patients(seed: int, per_subtype: int) -> list[tuple[str, str, str]]:
    """(code, year, slide) of every patient folder, in a stable order."""
    rng = np.random.default_rng([seed, 0])
    taken = {slide for _, _, slide in _QUIRKS}
    out: list[tuple[str, str, str]] = []
    for code in CODES:
        mine = [q for q in _QUIRKS if q[0] == code]
        while len(mine) < per_subtype:
            slide = str(int(rng.integers(1000, 30000)))
            if rng.random() < 0.2:
                slide += "ABCDEFG"[int(rng.integers(7))]
            if slide not in taken:
                taken.add(slide)
                mine.append((code, "14", slide))
        out += mine
    return out


def write(out_dir: Path, seed: int, per_subtype: int, per_magnification: tuple[int, int],
          layout: str) -> None:
    """Write the demo tree under ``out_dir`` (see the module docstring)."""
    base = out_dir / "BreaKHis_v1"
    if layout == "kaggle":
        base = base / "BreaKHis_v1"
    breast = base / "histology_slides" / "breast"
    written: list[_Name] = []
    for p_index, (code, year, slide) in enumerate(patients(seed, per_subtype)):
        prng = np.random.default_rng([seed, 1, p_index])
        tint = prng.normal(0.0, 10.0, 3)  # this slide's stain variation
        for m_index, mag in enumerate(MAGNIFICATIONS):
            count = int(prng.integers(per_magnification[0], per_magnification[1] + 1))
            for seq in range(1, count + 1):
                name = _Name(code=code, year=year, slide=slide,
                                 magnification=int(mag[:-1]), seq=seq)
                rng = np.random.default_rng([seed, 2, p_index, m_index, seq])
                rgb = render(rng, _STYLES[code], _MAG_SCALE[name.magnification], tint)
                ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                if not ok:
                    raise RuntimeError(f"{name.file_name}: PNG encoding failed")
                write_bytes(breast.joinpath(*name.parts()), buf.tobytes())
                written.append(name)
    if layout == "kaggle":
        write_text(out_dir / "Folds.csv", _folds_csv(written, seed))


def render(rng: np.random.Generator, style: _Style, scale: float, tint: np.ndarray) -> np.ndarray:
    """One H x W x 3 uint8 RGB field of view."""
    small = rng.normal(0.0, 1.0, (HEIGHT // 20, WIDTH // 20)).astype(np.float32)
    texture = cv2.resize(small, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)[..., None]
    stroma = np.array([232.0, 170.0, 200.0]) + tint
    img = np.clip(stroma + 8.0 * texture, 0, 255).astype(np.uint8)
    lo, hi = (0, 0), (WIDTH, HEIGHT)
    n_fibres = int(60 / scale) + 5
    for p0, step in zip(rng.uniform(lo, hi, (n_fibres, 2)),
                        rng.normal(0, 80 * scale, (n_fibres, 2)), strict=True):
        cv2.line(img, _pt(p0), _pt(p0 + step), _color((215, 130, 175), tint, rng), 2,
                 cv2.LINE_AA)
    for _ in range(int(6 * style.mucin)):
        centre = rng.uniform(lo, hi)
        axes = rng.uniform(60, 140, 2) * min(scale, 2.0)
        cv2.ellipse(img, _pt(centre), _pt(axes), float(rng.uniform(0, 180)), 0, 360,
                    _color((205, 215, 235), tint, rng), -1, cv2.LINE_AA)
    nucleus = np.array([95.0, 45.0, 130.0]) * (1.25 - 0.6 * style.darkness) + tint
    radius = style.nucleus_radius * scale
    centres: list[np.ndarray] = []
    pleo: list[float] = []
    for _ in range(int(style.glands / scale**2 + rng.random())):
        centre = rng.uniform(lo, hi)
        r = style.gland_radius * scale * rng.uniform(0.7, 1.3)
        cv2.circle(img, _pt(centre), int(r), _color((245, 235, 240), tint, rng), -1,
                   cv2.LINE_AA)
        n_ring = max(6, int(2 * np.pi * r / (2.2 * radius)))
        angle = 2 * np.pi * np.arange(n_ring) / n_ring
        centres.append(centre + (r + radius) * np.stack([np.cos(angle), np.sin(angle)], 1))
        pleo += [0.1] * n_ring
    n_free = int(style.nuclei / scale**2)
    centres.append(rng.uniform(lo, hi, (n_free, 2)))
    pleo += [style.pleomorphism] * n_free
    at = np.concatenate(centres)
    spread = np.asarray(pleo)[:, None] * rng.normal(0, 1, (len(at), 2))
    axes = np.maximum(1.0, radius * (1 + spread))
    angles = rng.uniform(0, 180, len(at))
    colours = np.clip(nucleus + rng.normal(0, 6, (len(at), 3)), 0, 255).astype(int).tolist()
    for c, a, ang, col in zip(at, axes, angles, colours, strict=True):
        cv2.ellipse(img, _pt(c), _pt(a), float(ang), 0, 360, col, -1, cv2.LINE_AA)
    return cv2.GaussianBlur(img, (0, 0), 1.0)


def _color(base, tint: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    c = np.clip(np.asarray(base, float) + tint + rng.normal(0, 6, 3), 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


def _pt(xy: np.ndarray) -> tuple[int, int]:
    return round(float(xy[0])), round(float(xy[1]))


def _folds_csv(names: list[_Name], seed: int) -> str:
    """The Kaggle mirror's ``Folds.csv``: ``fold,mag,grp,filename`` for 5 folds."""
    patients_sorted = sorted({n.folder for n in names})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["fold", "mag", "grp", "filename"])
    for fold in range(1, 6):
        rng = np.random.default_rng([seed, 3, fold])
        test = set(rng.choice(patients_sorted, size=max(1, len(patients_sorted) * 3 // 10),
                              replace=False).tolist())
        for n in names:
            path = "/".join(("BreaKHis_v1", "histology_slides", "breast", *n.parts()))
            w.writerow([fold, n.magnification, "test" if n.folder in test else "train", path])
    return buf.getvalue()


def write_demo(cfg: DatasetConfig, out_dir: Path) -> None:
    """The demo tree of ``cfg.demo`` into ``out_dir``; same params, same bytes."""
    d = cfg.demo
    write(out_dir, d.seed, d.patients_per_subtype, d.images_per_magnification, d.layout)
