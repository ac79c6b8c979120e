"""Latency of ``oncopipe serve``: one prediction over HTTP, per dataset, after warm-up.

For each dataset: a model of the demo profile's architecture and input shape (random weights:
latency does not depend on them) and one input from the demo generator, at the demo's real
sizes (a 96x96 PCam TIF, an ISIC JPEG, a 700x460 BreakHis PNG, a 128x128xN MosMed study, a
zipped 40-slice LIDC series with a point). The app runs under uvicorn on 127.0.0.1; a client
posts the same upload ``--repeats`` times to ``/api/predict`` and to ``/api/explain`` (the
page's call: + Grad-CAM and the pictures). The first request, which loads the model, is
reported apart. Times are client-side wall clock: upload, unpacking, preprocessing,
inference, answer.

Usage (writes the table into docs/serve.md between its markers)::

    python benchmarks/serve_latency.py --repeats 20 --write docs/serve.md
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import socket
import statistics
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import httpx2 as httpx
import torch
import uvicorn
import yaml

from oncopipe import datasets
from oncopipe.core import provenance
from oncopipe.core.cards import CodeVersion, ModelCard
from oncopipe.learn import inference, models
from oncopipe.serve.app import Settings, create_app

ROOT = Path(__file__).resolve().parents[1]
MARK_BEGIN, MARK_END = "<!-- serve_latency:begin -->", "<!-- serve_latency:end -->"
SMALL_DEMO = {  # fewer items than the demo, same sizes
    "pcam": {"n_train": 10, "n_test": 0},
    "isic": {"n_patients": 2, "images_per_patient": [1, 1], "n_test": 0, "large_images": 1,
             "duplicates": 0, "malignant_fraction": 0.5},
    "breakhis": {"patients_per_subtype": 2, "images_per_magnification": [1, 1]},
    "mosmed": {"studies": [1, 0, 0, 0, 0], "masks": 0},
    "lidc": {"n_patients": 8},
}


def project(root: Path) -> dict[str, tuple[Path, str | None]]:
    """Models and one input per dataset under ``root``: {dataset: (upload, point)}."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name in datasets.NAMES:
        params[name]["raw"] = str(root / "raw" / name)
        params[name]["demo"].update(SMALL_DEMO[name])
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    inputs = {}
    for name in datasets.NAMES:
        cfg = datasets.load_config(name, root / "params.yaml")
        datasets.spec(name).write_demo(cfg, cfg.raw)
        prepare = datasets.spec(name)
        point = None
        if name == "lidc":
            series = sorted({p.parent for p in cfg.raw.rglob("*.dcm")})[0]
            upload = root / "series.zip"
            with zipfile.ZipFile(upload, "w") as zf:
                for f in sorted(series.glob("*.dcm")):
                    zf.write(f, f"{series.name}/{f.name}")
            _, geometry = prepare.view(cfg, series)
            (x0, x1), (y0, y1), (z0, z1) = geometry["extent_mm"]
            point = f"{(x0 + x1) / 2}, {(y0 + y1) / 2}, {(z0 + z1) / 2}"
            sample = prepare.preprocess_one(cfg, series, tuple(map(float, point.split(","))))
        else:
            spec = datasets.spec(name).predict_input
            files = sorted(p for p in cfg.raw.rglob("*")
                           if p.name.lower().endswith(spec.suffixes) and "test" not in p.parts)
            upload = max(files, key=lambda p: p.stat().st_size)  # the largest: the slowest
            sample = prepare.preprocess_one(cfg, upload)
        names = list(datasets.spec(name).class_names[cfg.task])
        net = models.build(cfg.train, tuple(sample.shape), len(names))
        folder = root / "models" / name
        folder.mkdir(parents=True)
        torch.save(net.state_dict(), folder / inference.MODEL_FILE)
        shape = tuple(sample.shape)
        card = ModelCard(dataset=name, task=cfg.task, profile=cfg.profile, seed=cfg.seed,
                         class_names=tuple(names), sample_shape=shape,
                         layout="CHW" if len(shape) == 3 else "CDHW", dtype=sample.dtype.str,
                         normalisation={}, shards_params_hash="", run="", best_epoch=0,
                         epochs_run=0, best_value=0.0, train=cfg.train, processes=1,
                         architecture=net.architecture, raw=None,  # random weights
                         code=CodeVersion(**provenance.code_version()))
        (folder / inference.CONFIG_FILE).write_text(card.to_json())
        inputs[name] = (upload, point)
    return inputs


def serve(root: Path) -> tuple[str, uvicorn.Server, threading.Thread]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(Settings(root=root)), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


def measure(client: httpx.Client, url: str, upload: Path, point: str | None,
            repeats: int) -> tuple[float, list[float]]:
    data = upload.read_bytes()

    def once() -> float:
        started = time.perf_counter()
        response = client.post(url, files={"file": (upload.name, data)},
                               data={"point": point} if point else None)
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        return elapsed

    first = once()
    return first, [once() for _ in range(repeats)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20,
                        help="requests per dataset and endpoint after the first (default 20)")
    parser.add_argument("--write", type=Path,
                        help="Markdown file whose serve_latency markers get the table")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        root = Path(tmp)
        inputs = project(root)
        base, server, thread = serve(root)
        with httpx.Client(timeout=120) as client:
            for name, (upload, point) in inputs.items():
                first, pred = measure(client, f"{base}/api/predict/{name}", upload, point,
                                      args.repeats)
                _, expl = measure(client, f"{base}/api/explain/{name}", upload, point,
                                  args.repeats)
                card = ModelCard.read(root / "models" / name)
                row = (name, f"{card.train.model} {card.sample_shape}",
                       f"{upload.suffix} {upload.stat().st_size // 1024} KiB", first,
                       min(pred), statistics.median(pred), max(pred), statistics.median(expl))
                rows.append(row)
                print(f"{name:9s} first {first * 1000:7.0f} ms  predict min {row[4] * 1000:.0f} "
                      f"median {row[5] * 1000:.0f} max {row[6] * 1000:.0f} ms  explain median "
                      f"{row[7] * 1000:.0f} ms", flush=True)
        server.should_exit = True
        thread.join(10)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s) visible "
               f"(load average {os.getloadavg()[0]:.1f} at the end), torch {torch.__version__} "
               f"with {torch.get_num_threads()} threads, CPU only")
    table = [
        f"Measured with `python benchmarks/serve_latency.py --repeats {args.repeats}` on "
        f"{machine}; client-side wall clock over HTTP on 127.0.0.1, {args.repeats} requests "
        "after the first.",
        "",
        "| dataset | model (input) | upload | first request (loads the model) | "
        "predict, min | predict, median | predict, max | explain (+ Grad-CAM, pictures), "
        "median |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
        *(f"| {n} | {m} | {u} | {f * 1000:.0f} ms | {lo * 1000:.0f} ms | {p * 1000:.0f} ms | "
          f"{x * 1000:.0f} ms | {e * 1000:.0f} ms |" for n, m, u, f, lo, p, x, e in rows),
    ]
    text = "\n".join(table)
    print(text)
    if args.write:
        doc = args.write.read_text(encoding="utf-8")
        pattern = re.compile(re.escape(MARK_BEGIN) + ".*?" + re.escape(MARK_END), re.S)
        if not pattern.search(doc):
            raise SystemExit(f"{args.write}: markers {MARK_BEGIN} ... {MARK_END} not found")
        args.write.write_text(pattern.sub(f"{MARK_BEGIN}\n{text}\n{MARK_END}", doc),
                              encoding="utf-8")


if __name__ == "__main__":
    main()
