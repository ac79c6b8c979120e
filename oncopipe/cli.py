"""The ``oncopipe`` command: ``predict`` (one raw input) and ``gate`` (CI metrics check)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from oncopipe import config, datasets, gate


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "gate":
        try:
            return gate.run(args.thresholds, args.metrics_dir, args.baseline, args.tolerance,
                            args.params, args.profile)
        except gate.GateError as exc:
            print(f"gate: {exc}", file=sys.stderr)
            return 2
    from oncopipe import predict

    try:
        result = predict.predict_file(args.dataset, args.input, args.model,
                                      tuple(args.point) if args.point else None, args.params)
    except (OSError, ValueError) as exc:
        print(f"predict: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json
          else f"{args.input}: {predict.in_words(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
