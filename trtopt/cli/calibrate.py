"""`trtopt calibrate`: INT8 scale table (and optionally a legacy TensorRT cache) for an ONNX model."""
from __future__ import annotations

import argparse

from trtopt.usercode import CODE_WARNING
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate", help="compute INT8 activation scales (entropy, percentile, max, mse) for an ONNX model",
        description="Run the FP32 model in ONNX Runtime over calibration data, batch by batch, and write a "
                    "JSON scale table keyed to the model's sha256. Also writes or imports the legacy "
                    "TensorRT calibration cache.")
    parser.add_argument("model", help="FP32 ONNX model")
    parser.add_argument("--calib-data", metavar="SRC",
                        help="digits | random | FILE.npz | FOLDER (arrays or images) | FILE.py[:FUNCTION] "
                             f"({CODE_WARNING})")
    parser.add_argument("--method", "--calib-method", dest="method", default="entropy",
                        choices=["entropy", "auto", "percentile", "max", "mse"],
                        help="calibration method (default entropy; auto picks per tensor the candidate with the least "
                             "quantization error, as `build` does by default)")
    parser.add_argument("--percentile", type=float, default=99.99, help="for --method percentile (default 99.99)")
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
    parser.add_argument("--max-samples", type=int, help="use at most N samples")
    parser.add_argument("--batch-size", type=int, default=16, help="samples per inference batch (default 16)")
    parser.add_argument("--nan-policy", choices=["error", "skip"], default="error",
                        help="NaN/Inf in an activation: fail naming tensor and batch (default), or leave them out")
    parser.add_argument("--shapes", metavar="SPEC",
                        help="for random data: input sizes, trtexec style: input:1x3x224x224[,other:...]")
    parser.add_argument("--seed", type=int, default=0, help="seed for random data (default 0)")
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
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: all cores)")
    parser.add_argument("--calib-device", default="auto", choices=["auto", "cpu", "cuda", "tensorrt"],
                        help="where the forward pass runs: auto (ONNX Runtime's CUDA provider when onnxruntime-gpu "
                             "and a CUDA device are present, else the CPU), cpu, cuda, tensorrt (default auto)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trtopt.errors import UsageError
    from trtopt.quantization.table import ScaleTable
    from trtopt.quantization.trt_cache import read_trt_cache, version_code, write_trt_cache

    output = Path(args.output or Path("calibration") / f"{Path(args.model).stem}-{args.method}.json")
    version_code(args.trt_version)  # reject a bad version before minutes of calibration
    started = time.perf_counter()
    if args.import_trt_cache:
        if args.calib_data:
            raise UsageError("--import-trt-cache and --calib-data exclude each other")
        table: ScaleTable = read_trt_cache(args.import_trt_cache, args.model)
    else:
        if not args.calib_data:
            raise UsageError("--calib-data is required (digits, random, an .npz file, a folder, or file.py:function)")
        table = _calibrate(args)
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


def _calibrate(args: argparse.Namespace) -> "ScaleTable":  # noqa: F821 - imported lazily in run()
    from trtopt.quantization.calibrate import calibrate

    from trtopt.shapes import parse_shapes

    options = {"shapes": parse_shapes(args.shapes)} if args.shapes else {}
    return calibrate(args.model, args.calib_data, method=args.method, percentile=args.percentile,
                     all_tensors=args.all_tensors, nan_policy=args.nan_policy, batch_size=args.batch_size,
                     max_samples=args.max_samples, threads=args.threads, seed=args.seed, part=args.calib_part,
                     source_options=options, device=args.calib_device)
