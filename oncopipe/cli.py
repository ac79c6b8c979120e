"""The oncopipe command: predict (one raw input), serve (the local web app), gate (the CI
metrics check), results (docs/results.md from the committed metrics)."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from pathlib import Path

from oncopipe import datasets, gate, results
from oncopipe.core import config
from oncopipe.core.errors import InputError


def _version() -> str:
    """The installed distribution's version (pyproject.toml is the one place it is written)."""
    try:
        return metadata.version("oncopipe")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed: pip install -e .)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oncopipe", description=__doc__)
    parser.add_argument("--version", action="version", version=f"oncopipe {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="class probabilities for one raw input")
    p.add_argument("dataset", choices=datasets.NAMES, help="which dataset's model answers")
    p.add_argument("input", type=Path,
                   help="a DICOM series folder (lidc), a NIfTI file (mosmed), an image file")
    p.add_argument("--point", type=float, nargs=3, metavar=("X", "Y", "Z"),
                   help="lidc: the point to classify, in patient coordinates (mm)")
    p.add_argument("--model", type=Path, help="model directory (default models/<dataset>)")
    p.add_argument("--params", type=Path, default=config.PARAMS_FILE,
                   help="params file the preprocessing is read from (default params.yaml)")
    p.add_argument("--json", action="store_true", help="print JSON instead of words")

    s = sub.add_parser("serve", help="local web app: predictions with saliency, pipeline outputs")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    s.add_argument("--root", type=Path, default=Path("."),
                   help="project folder holding params.yaml, models/, data/, metrics/")
    s.add_argument("--max-upload-mb", type=int, default=512,
                   help="largest upload accepted, MiB (413 beyond; default 512)")
    s.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also answer requests addressed to this host name (repeatable; "
                        "e.g. the machine's name when binding 0.0.0.0); others get 421")

    g = sub.add_parser("gate", help="compare metrics/*/metrics.json with the thresholds")
    g.add_argument("--thresholds", type=Path, default=gate.THRESHOLDS_FILE,
                   help="the floors per profile (default metrics/thresholds.yaml)")
    g.add_argument("--metrics-dir", type=Path, default=Path("metrics"),
                   help="folder of <dataset>/metrics.json (default metrics)")
    g.add_argument("--baseline", help="git revision to compare with via `dvc metrics diff`")
    g.add_argument("--tolerance", type=float, default=0.02,
                   help="allowed drop against the baseline (default 0.02)")
    g.add_argument("--params", type=Path, default=config.PARAMS_FILE,
                   help="where each dataset's `profile` is read (default params.yaml)")
    g.add_argument("--profile", choices=gate.PROFILES,
                   help="gate every dataset with this profile's floors instead of its own")

    r = sub.add_parser("results", help="write docs/results.md from metrics/*/metrics.json")
    r.add_argument("--metrics-dir", type=Path, default=Path("metrics"),
                   help="folder of <dataset>/metrics.json (default metrics)")
    r.add_argument("--out", type=Path, default=results.RESULTS_DOC,
                   help="the Markdown file to write (default docs/results.md)")
    r.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when the file is not what the metrics give")
    r.add_argument("--seeds", action="store_true",
                   help="print mean, sd and per-seed test figures of a DVC seed sweep "
                        "(dvc exp show) instead; writes nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "results" and args.seeds:
        from oncopipe import seeds

        try:
            print(seeds.table(seeds.aggregate(seeds.read_experiments())), end="")
        except seeds.SeedsError as exc:
            print(f"results: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "results":
        text = results.render(args.metrics_dir)
        if args.check:
            current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
            if current != text:
                print(f"{args.out}: out of date; run `oncopipe results`", file=sys.stderr)
                return 1
            return 0
        changed = results.write(args.metrics_dir, args.out)
        print(f"{args.out}: {'written' if changed else 'unchanged'}")
        return 0
    if args.command == "gate":
        try:
            return gate.run(args.thresholds, args.metrics_dir, args.baseline, args.tolerance,
                            args.params, args.profile)
        except gate.GateError as exc:
            print(f"gate: {exc}", file=sys.stderr)
            return 2
    if args.command == "serve":
        from oncopipe.core import log
        from oncopipe.serve import serve

        try:
            import fastapi  # noqa: F401
            import multipart  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError as exc:
            print(f"serve: {exc.name} is not installed; pip install -e '.[serve]'",
                  file=sys.stderr)
            return 2
        log.setup("serve")
        serve(args.host, args.port, tuple(args.allow_host), root=args.root,
              max_upload=args.max_upload_mb << 20)
        return 0
    from oncopipe import predict

    try:
        result = predict.predict_file(args.dataset, args.input, args.model,
                                      tuple(args.point) if args.point else None, args.params)
    except (InputError, OSError) as exc:  # the user's settings or input; unreadable files
        print(f"predict: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.input}: {predict.in_words(result)}")
    for warning in result["warnings"]:
        print(f"warning: {warning}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
