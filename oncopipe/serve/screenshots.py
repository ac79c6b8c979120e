"""The screenshots of docs/serve.md, taken from the project's current demo run, never by hand.

    python -m oncopipe.serve.screenshots            # after `dvc repro`; writes docs/serve*.png

Serves the project (its ``models/``, ``data/`` and ``metrics/``) in headless Chromium, runs
the PCam and LIDC examples as a person would click them, and saves the whole page. Beside
the pictures, ``docs/serve-screenshots.json`` records the SHA-256 of each dataset's
``metrics/<ds>/metrics.json`` they show and of each picture: tests/test_serve_screenshots.py
fails when the metrics changed since (the pictures show an old run) or a picture was replaced.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

from oncopipe.serve import browser as web
from oncopipe.serve.app import Settings

SHOTS = {"serve.png": ("pcam", 1), "serve-lidc.png": ("lidc", 0)}  # picture: (dataset, example)
RECORD = "serve-screenshots.json"
WIDTH, MAX_HEIGHT = 1400, 2400


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def metrics_fingerprint(root: Path) -> dict[str, str]:
    """SHA-256 of the metrics the screenshots show, per dataset."""
    return {ds: _sha(root / "metrics" / ds / "metrics.json")
            for ds in sorted({ds for ds, _ in SHOTS.values()})}


def record(docs: Path, root: Path) -> dict:
    """What ``docs/serve-screenshots.json`` holds for the pictures now in ``docs``."""
    return {"metrics": metrics_fingerprint(root),
            "screenshots": {name: _sha(docs / name) for name in sorted(SHOTS)}}


def _loaded(driver, css: str) -> bool:
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].every((i) => i.complete "
        "&& i.naturalWidth > 0)", css)


def take(root: Path, docs: Path) -> dict:
    """Take every screenshot into ``docs`` and write the record; returns it."""
    with tempfile.TemporaryDirectory() as profile, \
            web.server(Settings(root=root)) as url, \
            web.chromium(Path(profile), WIDTH, 1200) as driver:
        for name, (dataset, example) in SHOTS.items():
            driver.set_window_size(WIDTH, 1200)
            answer = web.run_example(driver, url, dataset, example)
            if "%" not in answer:
                raise RuntimeError(f"{dataset} example: {answer}")
            web.wait(driver, lambda d: _loaded(d, "#pipeline-body img"), "the plots")
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(WIDTH, min(MAX_HEIGHT, height + 140))
            web.wait(driver, lambda d: _loaded(d, "main img"), "the resized page")
            driver.save_screenshot(str(docs / name))
    done = record(docs, root)
    (docs / RECORD).write_text(json.dumps(done, indent=2, sort_keys=True) + "\n",
                               encoding="utf-8")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oncopipe.serve.screenshots",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="the project (demo run)")
    parser.add_argument("--docs", type=Path, default=None, help="default ROOT/docs")
    args = parser.parse_args(argv)
    docs = args.docs or args.root / "docs"
    for name, shot in take(args.root, docs)["screenshots"].items():
        print(f"{docs / name}: {shot[:12]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
