"""`trtopt calibrate`: INT8 scale table (and optionally a legacy TensorRT cache) for an ONNX model."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from trtopt.cli.groups import CALIBRATION, ENGINE, OUTPUT, SHAPES

if TYPE_CHECKING:  # imported lazily at run time: `--help` stays fast
    from trtopt.quantization.table import ScaleTable
    from trtopt.settings import CalibrationSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate", help="compute INT8 activation scales (auto, entropy, percentile, max, mse) for an ONNX model",
        description="Run the FP32 model in ONNX Runtime over calibration data, batch by batch, and write a "
                    "JSON scale table keyed to the model's sha256 (what `trtopt build --calib-table` takes). Also "
                    "writes or imports the legacy TensorRT calibration cache.")
    parser.add_argument("model", help="FP32 ONNX model")
    CALIBRATION.add(parser, only=["data", "method", "percentile", "samples", "seed", "nan_policy", "device"])
    SHAPES.add(parser, only=["shapes", "input_ranges"])  # sizes and value ranges for random data
    ENGINE.add(parser, only=["threads"])
    OUTPUT.add(parser, only=["batch_size"])
    parser.add_argument(
        "--all-tensors", action="store_true", help="calibrate every float activation, not only Q/DQ targets"
    )
    parser.add_argument(
        "--calib-part",
        choices=["calibration", "all", "heldout"],
        default="calibration",
        help="which part of the data to calibrate on (default calibration: the samples `trtopt build` "
        "calibrates on, leaving the held-out part for accuracy checks; digits: the val split)",
    )
    parser.add_argument("-o", "--output", metavar="TABLE.json",
                        help="scale table path (default calibration/<model>-<method>.json)")
    parser.add_argument("--trt-cache", metavar="FILE", help="also write a legacy TensorRT (<= 10) calibration cache")
    parser.add_argument(
        "--trt-version", default="10.9.0", help="TensorRT version named in the cache header (default 10.9.0)"
    )
    parser.add_argument(
        "--import-trt-cache",
        metavar="FILE",
        help="convert an existing TensorRT calibration cache into a scale table for MODEL",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trtopt.errors import UsageError
    from trtopt.quantization.trt_cache import read_trt_cache, version_code, write_trt_cache

    settings = CALIBRATION.parse(args)
    output = Path(args.output or Path("calibration") / f"{Path(args.model).stem}-{settings.method}.json")
    version_code(args.trt_version)  # reject a bad version before minutes of calibration
    started = time.perf_counter()
    if args.import_trt_cache:
        if settings.data:
            raise UsageError("--import-trt-cache and --calib-data exclude each other")
        table: ScaleTable = read_trt_cache(args.import_trt_cache, args.model)
    else:
        if not settings.data:
            raise UsageError("--calib-data is required (digits, random, an .npz file, a folder, or file.py:function)")
        table = _calibrate(args, settings)
    table.save(output)
    if args.import_trt_cache:
        print(f"imported {len(table.tensors)} tensor scales from {args.import_trt_cache} for {args.model}")
    else:
        print(f"calibrated {len(table.tensors)} tensors of {args.model} on {table.num_samples} samples "
              f"(method {table.method}) in {time.perf_counter() - started:.1f} s")
    if table.tensors:
        ranked = sorted(table.tensors.items(), key=lambda item: item[1].amax)
        low, high = ranked[0], ranked[-1]
        print(f"  amax from {low[1].amax:.4g} ({low[0]}) to {high[1].amax:.4g} ({high[0]})")
    print(f"  scale table: {output} (id {table.table_id[:12]})")
    if args.trt_cache:
        write_trt_cache(table, args.trt_cache, args.trt_version)
        print(f"  TensorRT cache: {args.trt_cache} (TRT-{version_code(args.trt_version)}-EntropyCalibration2)")
    return 0


def _calibrate(args: argparse.Namespace, settings: CalibrationSettings) -> ScaleTable:
    from trtopt.quantization.calibrate import calibrate
    from trtopt.shapes import parse_shapes

    from trtopt.data.sources.synthetic import parse_input_ranges

    shape_settings = SHAPES.parse(args)
    options: dict[str, object] = {"shapes": parse_shapes(shape_settings.shapes)} if shape_settings.shapes else {}
    if shape_settings.input_ranges:  # value ranges of random data (integer inputs need one)
        options["ranges"] = parse_input_ranges(shape_settings.input_ranges)
    return calibrate(args.model, settings.data, settings, all_tensors=args.all_tensors,
                     batch_size=args.build_batch_size, threads=ENGINE.parse(args).threads, part=args.calib_part,
                     source_options=options)
