"""The ``oncopipe`` command: ``predict`` (one raw input), ``serve`` (the local web app),
``gate`` (CI metrics check), ``results`` (docs/results.md from the committed metrics)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from oncopipe import config, datasets, gate, results
from oncopipe.errors import InputError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oncopipe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="class probabilities for one raw input")
    p.add_argument("dataset", choices=datasets.NAMES)
    p.add_argument("input", type=Path,
                   help="a DICOM series folder (lidc), a NIfTI file (mosmed), an image file")
    p.add_argument("--point", type=float, nargs=3, metavar=("X", "Y", "Z"),
                   help="lidc: the point to classify, in patient coordinates (mm)")
    p.add_argument("--model", type=Path, help="model directory (default models/<dataset>)")
    p.add_argument("--params", type=Path, default=config.PARAMS_FILE)
    p.add_argument("--json", action="store_true", help="print JSON instead of words")

    s = sub.add_parser("serve", help="local web app: predictions with saliency, pipeline outputs")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--root", type=Path, default=Path("."),
                   help="project folder holding params.yaml, models/, data/, metrics/")
    s.add_argument("--max-upload-mb", type=int, default=512,
                   help="largest upload accepted, MiB (413 beyond; default 512)")
    s.add_argument("--max-unpacked-mb", type=int, default=4096,
                   help="largest size a zip or .gz upload may inflate to, MiB (default 4096)")

    g = sub.add_parser("gate", help="compare metrics/*/metrics.json with the thresholds")
    g.add_argument("--thresholds", type=Path, default=gate.THRESHOLDS_FILE)
    g.add_argument("--metrics-dir", type=Path, default=Path("metrics"))
    g.add_argument("--baseline", help="git revision to compare with via `dvc metrics diff`")
    g.add_argument("--tolerance", type=float, default=0.02,
                   help="allowed drop against the baseline (default 0.02)")
    g.add_argument("--params", type=Path, default=config.PARAMS_FILE,
                   help="where each dataset's `profile` is read (default params.yaml)")
    g.add_argument("--profile", choices=gate.PROFILES,
                   help="gate every dataset with this profile's floors instead of its own")

    r = sub.add_parser("results", help="write docs/results.md from metrics/*/metrics.json")
    r.add_argument("--metrics-dir", type=Path, default=Path("metrics"))
    r.add_argument("--out", type=Path, default=results.RESULTS_DOC)
    r.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when the file is not what the metrics give")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
        from oncopipe import log
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
        serve(args.host, args.port, root=args.root,
              max_upload=args.max_upload_mb << 20, max_unpacked=args.max_unpacked_mb << 20)
        return 0
    from oncopipe import predict

    try:
        result = predict.predict_file(args.dataset, args.input, args.model,
                                      tuple(args.point) if args.point else None, args.params)
    except (OSError, InputError) as exc:
        print(f"predict: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json
          else f"{args.input}: {predict.in_words(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
