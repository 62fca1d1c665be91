"""Command line: `python -m portal.pipeline convert|inspect STUDY.zip`.

`convert` exits 0 on success and 2 with one line `error: <code>: <message>` on stderr
when the study cannot be converted. `inspect` prints the report as JSON with an `error`
key (null or `{"code", "message"}`) and exits 0 either way.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .convert import convert_study, inspect_study
from .errors import PipelineError

EXIT_PIPELINE_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the two subcommands."""
    parser = argparse.ArgumentParser(
        prog="python -m portal.pipeline",
        description="Convert a zipped DICOM study into the inference NPZ and a NIfTI image.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser(
        "convert",
        help="write volume.npz, image.nii.gz, native.nii.gz and report.json into --out",
    )
    convert.add_argument("zip_path", type=Path, metavar="STUDY.zip")
    convert.add_argument("--out", type=Path, required=True, help="output folder (created)")
    convert.add_argument(
        "--series",
        "--series-id",
        dest="series_id",
        metavar="SERIES_ID",
        help="convert this series (a series_id from inspect) instead of the chosen one",
    )
    convert.add_argument(
        "--target-slices", type=int, default=64, help="slices of the output grid (default 64)"
    )
    convert.add_argument(
        "--target-hw",
        type=int,
        nargs=2,
        default=(512, 512),
        metavar=("ROWS", "COLUMNS"),
        help="rows and columns of the output grid (default 512 512)",
    )

    inspect = commands.add_parser("inspect", help="print the series report as JSON")
    inspect.add_argument("zip_path", type=Path, metavar="STUDY.zip")
    inspect.add_argument(
        "--series",
        "--series-id",
        dest="series_id",
        metavar="SERIES_ID",
        help="report this series as the chosen one",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "convert":
            result = convert_study(
                args.zip_path,
                args.out,
                series_id=args.series_id,
                target_hw=tuple(args.target_hw),
                target_slices=args.target_slices,
            )
            print(
                f"Converted series {result.series_id} ({result.modality}, "
                f"{result.slice_count} slices) into {args.out}"
            )
        else:
            report = inspect_study(args.zip_path, series_id=args.series_id)
            json.dump(report, sys.stdout, indent=2, ensure_ascii=False)
            sys.stdout.write("\n")
    except PipelineError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_PIPELINE_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
