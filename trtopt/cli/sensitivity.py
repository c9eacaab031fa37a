"""`trtopt sensitivity`: rank the quantized layers of a model by the accuracy each costs in INT8."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    from trtopt.cli.groups import ACCURACY, CALIBRATION, ENGINE, OUTPUT, QDQ, SHAPES

    p = subparsers.add_parser(
        "sensitivity",
        help="per-layer INT8 sensitivity on held-out data (quantized alone / left float alone)",
        description="Calibrate (or take --calib-table), then for every quantized layer (Q/DQ group) measure on "
        "held-out data the effect on every output metric of quantizing it alone and of leaving it alone "
        "in float; print the layers ranked, most harmful first, with their ONNX node names. --calib-data "
        "is required: its held-out part is the evaluation data unless --val-data (FILE.py:FN runs code). The data "
        "flags are build's: --calib-data random takes --input-range and --shapes as build does.",
    )
    p.add_argument("onnx", help="FP32 ONNX model")
    CALIBRATION.add(p, only=["data", "method", "table", "samples", "seed"], required=["data"])
    ACCURACY.add(p, only=["data", "metrics"])
    SHAPES.add(p, only=["shapes", "min_shapes", "opt_shapes", "max_shapes", "input_ranges"])
    QDQ.add(p, only=["encoding", "per_channel", "exclude_nodes", "exclude_op_types"])
    ENGINE.add(p, only=["threads"])
    OUTPUT.add(p, only=["batch_size"])
    p.add_argument("--samples", type=int, default=64, help="most held-out samples per variant (default 64)")
    p.add_argument("--top", type=int, help="show only the N most harmful layers")
    p.add_argument("--json", metavar="FILE", help="also write the full result (every metric of every output) as JSON")
    p.add_argument(
        "--html", metavar="FILE", help="also write an HTML page: bar plot of per-layer harm/gain and the table"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from trtopt.cli.groups import build_settings
    from trtopt.errors import UsageError
    from trtopt.fileio import atomic_write_json
    from trtopt.sensitivity import run_sensitivity

    settings = build_settings(args)
    if args.samples < 1 or settings.batch_size < 1:
        raise UsageError("--samples and --batch-size must be at least 1")
    result = run_sensitivity(
        Path(args.onnx), settings, samples=args.samples,
        on_layer=lambda done, total: print(f"\rsensitivity: {done}/{total} layers", end="", file=sys.stderr),
    )
    print(file=sys.stderr)
    all_int8 = result.all_int8.report
    print(
        f"{len(result.layers)} quantized layers, {result.samples} held-out samples, {result.evaluations} variants in "
        f"{result.seconds:.1f} s; all INT8: SNR {all_int8.snr_db:.1f} dB (worst output)"
    )
    print(result.table(args.top))
    if args.json:
        atomic_write_json(args.json, result.to_json())
        print(f"JSON: {args.json}")
    if args.html:
        from trtopt.bench.report_sensitivity import write_sensitivity_html

        write_sensitivity_html(result.to_json(), args.html, f"INT8 sensitivity of {Path(args.onnx).name}")
        print(f"HTML: {args.html}")
    return 0
