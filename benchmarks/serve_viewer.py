"""The web app's CT viewer on a long series: every slice reachable, and how long moving
through them all takes in headless Chromium.

A synthetic CT series of ``--slices`` slices of ``--rows`` x ``--rows`` pixels (default 764
of 512 x 512, the size of LIDC's longest series; the headers are those of the LIDC demo's
DICOM files, the pixels a phantom whose nodule moves with z) is zipped and uploaded through
the page as a person would (file chooser). Then, in the browser:

- **every slice drawn once**: the viewer's own draw of each axial slice, 0 to the last, one
  after the other (window/level lookup, canvas blit, overlays), summed: the rendering time
  of a move from one end to the other that shows every slice;
- **a drag end to end**: the slider dragged by the pointer from its left end to its right end
  in 100 moves (Selenium ActionChains), wall clock from the press until the last slice is on
  the canvas, and how many distinct slices were drawn on the way;
- the upload and the volume's download (raw int16), wall clock.

Usage (writes the table into docs/serve.md between its markers)::

    python benchmarks/serve_viewer.py --write docs/serve.md
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import torch
import yaml
from pydicom.uid import generate_uid

from oncopipe import datasets
from oncopipe.core import provenance
from oncopipe.core.cards import CodeVersion, ModelCard
from oncopipe.learn import inference, models
from oncopipe.serve import browser as web
from oncopipe.serve.app import Settings

ROOT = Path(__file__).resolve().parents[1]
MARK_BEGIN, MARK_END = "<!-- serve_viewer:begin -->", "<!-- serve_viewer:end -->"
MIB = 1 << 20


def _template(work: Path) -> pydicom.Dataset:
    """A CT slice of the LIDC demo (signed storage, intercept -1024): the headers to copy."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["lidc"]["raw"] = str(work / "demo")
    params["lidc"]["demo"].update(n_patients=8, rows=64, n_slices=16)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cfg = datasets.load_config("lidc", work / "params.yaml")
    datasets.spec("lidc").write_demo(cfg, cfg.raw)
    for path in sorted(cfg.raw.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        if (ds.get("Modality") == "CT" and ds.get("PixelRepresentation") == 1
                and float(ds.get("RescaleIntercept", 0)) == -1024
                and not ds.file_meta.TransferSyntaxUID.is_compressed):
            return ds
    raise RuntimeError("no plain signed CT slice in the LIDC demo")


def write_series(work: Path, slices: int, rows: int) -> Path:
    """The synthetic series, zipped (stored: CT pixels barely compress)."""
    ds = _template(work)
    folder = work / "long-series"
    folder.mkdir()
    spacing, step = 350.0 / rows, 0.625
    yy, xx = np.mgrid[:rows, :rows] * spacing - 175.0
    body = (xx / 160) ** 2 + (yy / 120) ** 2 <= 1
    lungs = ((np.abs(xx) - 70) / 50) ** 2 + (yy / 80) ** 2 <= 1
    series_uid = generate_uid()
    ds.SeriesInstanceUID = series_uid
    ds.Rows = ds.Columns = rows
    ds.PixelSpacing = [spacing, spacing]
    rng = np.random.default_rng(0)
    for k in range(slices):
        z = -step * (slices - 1) + k * step
        hu = np.where(body, 40, -1000).astype(np.int16)
        hu[lungs] = -850
        nx, ny = 60 * np.cos(k / 40), 40 * np.sin(k / 40)  # a nodule that moves with z
        hu[(xx - nx) ** 2 + (yy - ny) ** 2 <= 36] = 30
        hu += rng.integers(-15, 15, hu.shape, dtype=np.int16)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-175.0, -175.0, z]
        ds.SliceLocation = z
        ds.PixelData = (hu + 1024).astype("<i2").tobytes()
        ds.save_as(folder / f"{k + 1:06d}.dcm", enforce_file_format=True)
    upload = work / "long-series.zip"
    with zipfile.ZipFile(upload, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"{folder.name}/{f.name}")
    return upload


def write_model(work: Path) -> None:
    """LIDC's demo model with random weights (the viewer needs a model to show its form)."""
    cfg = datasets.load_config("lidc", work / "params.yaml")
    side = cfg.prepare.crops.size_2d
    names = list(datasets.spec("lidc").class_names[cfg.task])
    net = models.build(cfg.train, (1, side, side), len(names))
    folder = work / "models" / "lidc"
    folder.mkdir(parents=True)
    torch.save(net.state_dict(), folder / inference.MODEL_FILE)
    card = ModelCard(dataset="lidc", task=cfg.task, profile=cfg.profile, seed=cfg.seed,
                     class_names=tuple(names), sample_shape=(1, side, side), layout="CHW",
                     dtype="<f2", normalisation={}, shards_params_hash="", run="",
                     best_epoch=0, epochs_run=0, best_value=0.0, train=cfg.train, processes=1,
                     architecture=net.architecture, raw=None,
                     code=CodeVersion(**provenance.code_version()))
    (folder / inference.CONFIG_FILE).write_text(card.to_json())


DRAW_ALL = """
const viewer = state.viewer, v = viewer.views[0], times = [];
for (let k = 0; k < v.n; k++) {
  viewer.index[0] = k;
  const t = performance.now();
  viewer.draw(v);
  times.push(performance.now() - t);
}
return times;
"""

HOOK = """
const viewer = state.viewer, drawn = new Set(), draw = viewer.draw.bind(viewer);
window.__drawn = drawn;
viewer.draw = (v) => {
  draw(v);
  if (v.axis === 0) { drawn.add(viewer.index[0]); window.__last = performance.now(); }
};
viewer.setIndex(0, 0);
"""


def measure(upload: Path, work: Path, moves: int = 100) -> dict:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    settings = Settings(root=work, params=work / "params.yaml",
                        max_upload=upload.stat().st_size + 16 * MIB)
    with web.server(settings) as url, web.chromium(work / "profile") as driver:
        driver.get(f"{url}/#lidc")
        web.wait(driver, lambda d: d.find_elements(By.ID, "file"), "the form")
        started = time.perf_counter()
        driver.find_element(By.ID, "file").send_keys(str(upload))
        web.wait(driver, lambda d: d.find_elements(By.ID, "scan-axial-slider"), "the viewer",
                 timeout=600)
        loaded = time.perf_counter() - started
        n = int(driver.find_element(By.ID, "scan-axial-slider").get_attribute("max")) + 1
        times = driver.execute_script(DRAW_ALL)
        driver.execute_script(HOOK)
        web.wait(driver, lambda d: d.execute_script("return window.__drawn.has(0)"), "slice 0")
        driver.execute_script("window.__drawn.clear()")
        slider = driver.find_element(By.ID, "scan-axial-slider")
        width = slider.size["width"]
        chain = ActionChains(driver, duration=0).move_to_element_with_offset(
            slider, -width // 2 + 1, 0).click_and_hold()
        for _ in range(moves):
            chain.move_by_offset(round(width / moves), 0)
        t0 = driver.execute_script("return performance.now()")
        chain.release().perform()
        web.wait(driver, lambda d: d.execute_script(
            "return window.__drawn.has(arguments[0])", n - 1), "the last slice")
        drag_ms = driver.execute_script("return window.__last") - t0
        drawn = driver.execute_script("return window.__drawn.size")
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return {"slices": n, "draw_ms": times, "drag_ms": drag_ms, "drawn": drawn, "moves": moves,
            "load_s": loaded, "errors": severe}


def table(r: dict, rows: int, upload: Path) -> str:
    t = np.array(r["draw_ms"])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    head = (f"Measured with `python benchmarks/serve_viewer.py` on {platform.machine()}, "
            f"{os.cpu_count()} CPU(s) visible (load average {load:.1f} at the end), headless "
            f"Chromium (software rendering); a synthetic series of {r['slices']} slices of "
            f"{rows} x {rows} ({upload.stat().st_size / MIB:.0f} MiB zipped).")
    return "\n".join([
        head, "",
        "| what | figure |", "| --- | ---: |",
        f"| slices reachable (slider positions) | {r['slices']} of {r['slices']} |",
        f"| draw one axial slice: median / 90th percentile / max | {np.median(t):.1f} / "
        f"{np.percentile(t, 90):.1f} / {t.max():.1f} ms |",
        f"| every slice drawn once, end to end: sum (median x slices) | {t.sum() / 1000:.2f} s "
        f"({np.median(t) * len(t) / 1000:.2f} s) |",
        f"| slider dragged end to end ({r['moves']} pointer moves): press to last slice shown "
        f"| {r['drag_ms'] / 1000:.2f} s, {r['drawn']} distinct slices drawn |",
        f"| choose the file to viewer shown (upload, unpack, read, volume download) "
        f"| {r['load_s']:.1f} s |",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=764)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--write", type=Path, help="put the table into this Markdown file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        upload = write_series(work, args.slices, args.rows)
        write_model(work)
        result = measure(upload, work)
        if result["errors"]:
            raise SystemExit(f"browser errors: {result['errors']}")
        text = table(result, args.rows, upload)
    print(text)
    if args.write:
        doc = args.write.read_text(encoding="utf-8")
        block = f"{MARK_BEGIN}\n{text}\n{MARK_END}"
        new, n = re.subn(re.escape(MARK_BEGIN) + ".*?" + re.escape(MARK_END),
                         lambda _: block, doc, flags=re.S)
        if n != 1:
            raise SystemExit(f"{args.write}: no {MARK_BEGIN} ... {MARK_END} block")
        args.write.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    main()
