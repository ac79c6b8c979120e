"""Latency of ``oncopipe serve``: one request at a time per dataset, then 8 clients at once.

For each dataset: a model of the demo profile's architecture and input shape (random weights:
latency does not depend on them) and one input from the demo generator: a 96x96 PCam TIF, an
ISIC JPEG, a 700x460 BreakHis PNG, a MosMed study at the release's 512x512 in-plane size, a
zipped 40-slice LIDC series with a point. The server runs as users run it, ``oncopipe serve``
in its own process on 127.0.0.1 (loopback only); every client request has a timeout and the
run a fixed number of requests, and the server is stopped at the end, so the benchmark stops
by itself.

1. One at a time: per dataset, the first request (it loads the model) and ``repeats`` more to
   ``/api/predict`` and to ``/api/explain`` (the page's call: + Grad-CAM and the pictures).
2. Eight at once: ``clients`` clients each send ``per_client`` requests back to back,
   cycling through the ten (dataset, endpoint) pairs from different starting points, so
   CT studies and images are always in flight together. Latency is per request, client-side
   wall clock (upload, unpacking, preprocessing, inference, answer); answers 503 (a lane
   full) are counted apart, not timed.

    python -m benchmarks --only serve_latency      # tables into docs/benchmarks.md, docs/serve.md
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import httpx2 as httpx
import numpy as np
import torch
import yaml

from oncopipe import datasets
from oncopipe.core import provenance
from oncopipe.core.cards import CodeVersion, ModelCard
from oncopipe.learn import inference, models

ROOT = Path(__file__).resolve().parents[1]

REPEATS = 20  # one-at-a-time requests per dataset and endpoint, after the first
CLIENTS = 8
PER_CLIENT = 20
HEAVY = ("lidc", "mosmed")  # the CT lane's datasets (a series, a volume)
TIMEOUT_S = 120  # one request
SMALL_DEMO = {  # fewer items than the demo, same sizes (MosMed at the release's)
    "pcam": {"n_train": 10, "n_test": 0},
    "isic": {"n_patients": 2, "images_per_patient": [1, 1], "n_test": 0, "large_images": 1,
             "duplicates": 0, "malignant_fraction": 0.5},
    "breakhis": {"patients_per_subtype": 2, "images_per_magnification": [1, 1]},
    "mosmed": {"studies": [1, 0, 0, 0, 0], "masks": 0, "size": 512},
    "lidc": {"n_patients": 8},
}


def project(root: Path, mosmed_size: int) -> dict[str, tuple[Path, str | None]]:
    """Models and one input per dataset under ``root``: {dataset: (upload, point)}."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name in datasets.NAMES:
        params[name]["raw"] = str(root / "raw" / name)
        params[name]["demo"].update(SMALL_DEMO[name])
    params["mosmed"]["demo"]["size"] = mosmed_size
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    inputs = {}
    for name in datasets.NAMES:
        cfg = datasets.load_config(name, root / "params.yaml")
        spec = datasets.spec(name)
        spec.write_demo(cfg, cfg.raw)
        point = None
        if name == "lidc":
            series = sorted({p.parent for p in cfg.raw.rglob("*.dcm")})[0]
            upload = root / "series.zip"
            with zipfile.ZipFile(upload, "w") as zf:
                for f in sorted(series.glob("*.dcm")):
                    zf.write(f, f"{series.name}/{f.name}")
            _, geometry = spec.view(cfg, series)
            (x0, x1), (y0, y1), (z0, z1) = geometry["extent_mm"]
            point = f"{(x0 + x1) / 2}, {(y0 + y1) / 2}, {(z0 + z1) / 2}"
            sample = spec.preprocess_one(cfg, series, tuple(map(float, point.split(","))))
        else:
            files = sorted(p for p in cfg.raw.rglob("*")
                           if p.name.lower().endswith(spec.predict_input.suffixes)
                           and "test" not in p.parts)
            upload = max(files, key=lambda p: p.stat().st_size)  # the largest: the slowest
            sample = spec.preprocess_one(cfg, upload)
        names = list(spec.class_names[cfg.task])
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


class Server:
    """``oncopipe serve`` on a free loopback port, in its own process, until :meth:`stop`."""

    def __init__(self, root: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = open(root / "serve.log", "wb")  # noqa: SIM115 (closed in stop)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(root)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "oncopipe.cli", "serve", "--port", str(self.port),
             "--root", str(root)], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{self.url}/", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the server did not start: {(root / 'serve.log').read_text()}")
            time.sleep(0.2)

    def cpu_s(self) -> float:
        """CPU seconds the server process has used so far (all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _post(client: httpx.Client, url: str, upload: Path, data: bytes, point: str | None
          ) -> tuple[int, float]:
    started = time.perf_counter()
    response = client.post(url, files={"file": (upload.name, data)},
                           data={"point": point} if point else None)
    elapsed = time.perf_counter() - started
    if response.status_code not in (200, 503):
        raise SystemExit(f"{url}: {response.status_code} {response.text[:300]}")
    return response.status_code, elapsed


def one_at_a_time(base: str, inputs: dict, repeats: int) -> list[dict]:
    records = []
    with httpx.Client(timeout=TIMEOUT_S) as client:
        for name, (upload, point) in inputs.items():
            data = upload.read_bytes()
            times = {}
            for endpoint in ("predict", "explain"):
                url = f"{base}/api/{endpoint}/{name}"
                times[endpoint] = [_post(client, url, upload, data, point)[1]
                                   for _ in range(repeats + 1)]
            records.append({"phase": "single", "dataset": name,
                            "upload": f"{''.join(upload.suffixes[-2:])} "
                                      f"{upload.stat().st_size // 1024:,} KiB",
                            "first_s": times["predict"][0],
                            "predict_s": times["predict"][1:],
                            "explain_s": times["explain"][1:]})
    return records


def concurrent(base: str, inputs: dict, clients: int, per_client: int) -> list[dict]:
    """``clients`` threads, each ``per_client`` requests back to back; one record each."""
    pairs = [(name, endpoint) for name in inputs for endpoint in ("predict", "explain")]
    payloads = {name: (upload, upload.read_bytes(), point)
                for name, (upload, point) in inputs.items()}
    records: list[dict] = []
    lock = threading.Lock()
    failures: list[BaseException] = []

    def client_loop(k: int) -> None:
        try:
            with httpx.Client(timeout=TIMEOUT_S) as client:
                for j in range(per_client):
                    name, endpoint = pairs[(k + j) % len(pairs)]
                    upload, data, point = payloads[name]
                    status, seconds = _post(client, f"{base}/api/{endpoint}/{name}", upload,
                                            data, point)
                    with lock:
                        records.append({"phase": "mix", "dataset": name,
                                        "endpoint": endpoint, "status": status,
                                        "seconds": seconds})
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return records


def run(repeats: int = REPEATS, clients: int = CLIENTS, per_client: int = PER_CLIENT,
        mosmed_size: int = 512) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        root = Path(tmp)
        inputs = project(root, mosmed_size)
        server = Server(root)
        try:
            single = one_at_a_time(server.url, inputs, repeats)
            load, cpu, started = os.getloadavg()[0], server.cpu_s(), time.perf_counter()
            mix = concurrent(server.url, inputs, clients, per_client)
            wall, cpu = time.perf_counter() - started, server.cpu_s() - cpu
        finally:
            server.stop()
    meta = {"phase": "meta", "clients": clients, "per_client": per_client, "repeats": repeats,
            "load_before_mix": load, "load_after_mix": os.getloadavg()[0], "mix_wall_s": wall,
            "mix_server_cpu_s": cpu}
    return [*single, meta, *mix]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def _row(label: str, rows: list[dict]) -> str:
    timed = [r["seconds"] for r in rows if r["status"] == 200]
    refused = sum(r["status"] == 503 for r in rows)
    if not timed:
        return f"| {label} | {len(rows)} | 0 | {refused} | - | - | - |"
    p50, p95 = np.percentile(timed, [50, 95])
    return (f"| {label} | {len(rows)} | {len(timed)} | {refused} | {_ms(p50)} | {_ms(p95)} "
            f"| {_ms(max(timed))} |")


def table(records: list[dict]) -> str:
    """The concurrent mix: latency percentiles of all requests, the 2D and the CT ones, and
    per dataset (docs/benchmarks.md)."""
    meta = next(r for r in records if r["phase"] == "meta")
    mix = [r for r in records if r["phase"] == "mix"]
    heavy = [r for r in mix if r["dataset"] in HEAVY]
    light = [r for r in mix if r["dataset"] not in HEAVY]
    lines = [
        f"{meta['clients']} clients at once, {meta['per_client']} requests each (predict and "
        "explain, every dataset); server: `oncopipe serve` on 127.0.0.1, torch "
        f"{torch.__version__}, {len(os.sched_getaffinity(0))} CPU cores; load average "
        f"{meta['load_before_mix']:.2f} before the mix, {meta['load_after_mix']:.2f} after "
        "(the machine is shared: compare figures only at a similar load). The mix took "
        f"{meta['mix_wall_s']:.1f} s; the server used {meta['mix_server_cpu_s']:.1f} s of CPU "
        f"for it, {_ms(meta['mix_server_cpu_s'] / max(1, len(mix)))} per request.",
        "",
        "| requests | sent | answered | refused (503) | p50 | p95 | max |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        _row("all", mix),
        _row("2D images (PCam, ISIC, BreakHis)", light),
        _row("CT (MosMed volume, LIDC series)", heavy),
        *(_row(f"{name}, {endpoint}", [r for r in mix if (r["dataset"], r["endpoint"])
                                       == (name, endpoint)])
          for name in dict.fromkeys(r["dataset"] for r in mix)
          for endpoint in ("predict", "explain")),
    ]
    return "\n".join(lines)


def single_table(records: list[dict]) -> str:
    """One request at a time, per dataset (docs/serve.md)."""
    meta = next(r for r in records if r["phase"] == "meta")
    lines = [
        f"`python -m benchmarks --only serve_latency`: {meta['repeats']} requests per dataset "
        "and endpoint after the first, one at a time, client-side wall clock over HTTP on "
        f"127.0.0.1; {len(os.sched_getaffinity(0))} CPU cores, load average "
        f"{meta['load_before_mix']:.2f} at the end; models of the demo profile, random "
        "weights.",
        "",
        "| dataset | upload | first request (loads the model) | predict, min | "
        "predict, median | predict, max | explain (+ Grad-CAM, pictures), median |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in (r for r in records if r["phase"] == "single"):
        pred = r["predict_s"]
        lines.append(f"| {r['dataset']} | {r['upload']} | {_ms(r['first_s'])} | "
                     f"{_ms(min(pred))} | {_ms(statistics.median(pred))} | {_ms(max(pred))} | "
                     f"{_ms(statistics.median(r['explain_s']))} |")
    return "\n".join(lines)


def docs_blocks(records: list[dict]) -> list[tuple[Path, str, str]]:
    """Generated blocks outside docs/benchmarks.md: (doc, key, text)."""
    return [(ROOT / "docs" / "serve.md", "serve_latency", single_table(records))]
