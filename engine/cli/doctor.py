"""``python -m engine doctor``: one report of what the engine needs and has (see engine/diagnostics.py).

Exit status 0 when the preset is ready and the device usable, 1 otherwise, so scripts can check it too.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="default", help="models preset, or a folder with a preset.json")
    parser.add_argument(
        "--device", default=None, help="cuda, cuda:N, mps or cpu (default: the best available)"
    )
    parser.add_argument("--weights-dir", default=None, help="folder of the weight files")
    parser.add_argument("--log-file", default=None, help="the engine log to name (default: the serve log)")
    parser.add_argument("--quick", action="store_true", help="check presence and size only, skip SHA-256")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from engine import diagnostics
    from engine.cli.serve import default_log_path

    data = diagnostics.report(
        args.models,
        args.weights_dir,
        args.device,
        log_path=args.log_file or default_log_path(),
        hash_files=not args.quick,
        estimate=diagnostics.stored_estimate(args.models, args.device),
    )
    print(json.dumps(data, indent=2) if args.json else diagnostics.format_report(data))
    healthy = data["preset"].get("ready") and "error" not in data["device"]
    return 0 if healthy else 1
