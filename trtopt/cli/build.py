"""`trtopt build`: ONNX -> engines/NAME (FP32, FP16 or INT8), with accuracy vs FP32 measured at build."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from trtopt.usercode import CODE_WARNING

if TYPE_CHECKING:
    from trtopt.accuracy import MetricSettings

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _size(text: str) -> int:
    """trtexec-style sizes: 4G, 512M, 1048576."""
    number, unit = text.strip()[:-1], text.strip()[-1:].upper()
    if unit not in _UNITS or not unit:
        number, unit = text.strip(), ""
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 4G, 512M or a byte count, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return int(value)


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_quantization_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by `build` and `quantize` (how Q/DQ is written)."""
    p.add_argument(
        "--encoding",
        choices=["tensorrt", "onnxruntime-cpu"],
        help="Q/DQ encoding (default: tensorrt for the TensorRT backend, onnxruntime-cpu otherwise)",
    )
    p.add_argument(
        "--per-tensor", action="store_true", help="one scale per weight tensor instead of per output channel"
    )
    p.add_argument("--exclude-nodes", type=_names, default=[], metavar="N1,N2", help="node names kept in float")
    p.add_argument("--exclude-op-types", type=_names, default=[], metavar="OP1,OP2", help="op types kept in float")


def add_metric_arguments(p: argparse.ArgumentParser) -> None:
    """How outputs are compared with FP32 (shared by `build` and `sensitivity`)."""
    p.add_argument(
        "--class-axis",
        metavar="AXIS",
        help="axis of class scores for agreement: an integer, 'none', or per output "
        "NAME:AXIS,... (default: the last axis of rank-2 and rank-3 outputs; other outputs get cosine/SNR/IoU)",
    )
    p.add_argument(
        "--iou-threshold", type=float, default=0.5, help="threshold for IoU of probability-map outputs (default 0.5)"
    )
    p.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="FILE.py:FN",
        help="user accuracy metric: IMPORTS AND RUNS the Python file; FN(reference, candidate) gets two dicts "
        "output name -> array per batch and returns {score name: number} (higher is better); repeatable",
    )


def metric_settings(args: argparse.Namespace) -> MetricSettings:
    from trtopt.accuracy import MetricSettings, parse_class_axis

    default, per_output = parse_class_axis(args.class_axis)
    return MetricSettings(default, per_output, args.iou_threshold, tuple(args.metric))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "build",
        help="build an engine (FP32, --fp16 or --int8) into engines/NAME and check it against FP32",
        description="Build engines/NAME from an FP32 ONNX: calibrate and insert Q/DQ (--int8) or convert to mixed "
        "FP16 (--fp16), build with the chosen backend, then compare the engine with the FP32 ONNX on "
        "held-out samples. Identical inputs reuse the existing engine (--force rebuilds).",
    )
    p.add_argument("onnx", help="FP32 ONNX model")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--int8", action="store_true", help="explicit INT8 (Q/DQ) from calibration")
    precision.add_argument("--fp16", action="store_true", help="mixed precision FP16 (I/O stay FP32)")
    p.add_argument(
        "--calib-data",
        metavar="SRC",
        help=f"calibration data: .npz/.npy, folder, image folder, file.py:fn, digits ({CODE_WARNING})",
    )
    p.add_argument(
        "--calib-method",
        default="auto",
        choices=["auto", "entropy", "percentile", "max", "mse"],
        help="auto (default): per tensor, the candidate (entropy, percentiles, MSE, max) with the least "
        "quantization error",
    )
    p.add_argument(
        "--calib-table", metavar="JSON", help="scale table from `trtopt calibrate` (instead of --calib-data)"
    )
    p.add_argument("--calib-samples", type=int, default=512, help="most calibration samples to use (default 512)")
    p.add_argument(
        "--val-data",
        metavar="SRC",
        help=f"accuracy data, same forms as --calib-data (default: its held-out part; {CODE_WARNING})",
    )
    p.add_argument("--accuracy-samples", type=int, default=512, help="most samples for the accuracy check")
    p.add_argument(
        "--accuracy-budget",
        metavar="K=V,...",
        help="METRIC[@OUTPUT]=VALUE,...: agreement=, cosine=, snr=DB, iou=, max-abs-error=, mean-abs-error=, "
        "top1-drop=POINTS, a --metric score name, speedup=X (vs FP32). With --int8, the most harmful "
        "layers are kept float until it holds; fails (keeping nothing) when no assignment meets it",
    )
    add_metric_arguments(p)
    p.add_argument(
        "--sensitivity",
        action="store_true",
        help="with --int8: also measure every quantized layer's effect on held-out data (INT8 alone / float alone) "
        "and record the ranking in the engine folder (sensitivity.json; costs two variants per layer)",
    )
    p.add_argument(
        "--accept-accuracy-loss",
        action="store_true",
        help="do not warn on the terminal when the engine is far off FP32 (the manifest still records it)",
    )
    p.add_argument("--backend", default="auto", help="auto | onnxruntime | tensorrt (auto says what it picked and why)")
    p.add_argument("--name", help="engine name (default: MODEL-PRECISION)")
    p.add_argument("--engines-dir", default="engines", help="engine repository folder (default: engines)")
    p.add_argument("--shapes", help="input shapes, e.g. input:8x3x224x224 (min=opt=max)")
    p.add_argument("--min-shapes", help="profile minimum shapes")
    p.add_argument("--opt-shapes", help="profile optimum shapes")
    p.add_argument("--max-shapes", help="profile maximum shapes")
    p.add_argument("--input-range", metavar="NAME:LO:HI,...",
                   help="value range of generated (random) data per input, e.g. ids:0:30522; required for integer "
                        "inputs when no --calib-data/--val-data is given")
    add_quantization_arguments(p)
    p.add_argument("--fp16-io", dest="keep_io_types", action="store_false", help="FP16 inputs/outputs (with --fp16)")
    p.add_argument("--threads", type=int, help="CPU threads for ONNX Runtime (build, accuracy check and the engine)")
    p.add_argument("--workspace", type=_size, help="TensorRT workspace, e.g. 4G")
    p.add_argument(
        "--opt-level",
        "--builder-optimization-level",
        dest="opt_level",
        type=int,
        choices=range(6),
        metavar="0-5",
        help="TensorRT builder optimization level (default 3)",
    )
    p.add_argument("--no-tf32", dest="tf32", action="store_false", help="exact FP32: disable TF32 for FP32 conv/matmul")
    p.add_argument(
        "--version-compatible",
        action="store_true",
        help="TensorRT engine that runs on later TensorRT releases of the same major version",
    )
    p.add_argument(
        "--hardware-compat",
        default="none",
        choices=["none", "ampere+", "same-compute-capability"],
        help="TensorRT hardware compatibility level (default none: this GPU model only)",
    )
    p.add_argument("--timing-cache", metavar="PATH", help="TensorRT timing cache file (read and updated)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size for calibration and the accuracy check")
    p.add_argument("--force", action="store_true", help="rebuild even when an identical engine exists")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=run, keep_io_types=True)


def format_accuracy(accuracy: dict | None) -> str:
    if not accuracy:
        return "accuracy: not measured"
    agreement = accuracy.get("top1_agreement")
    parts = [f"top-1 agreement {100 * agreement:.2f}%" if agreement is not None else "no class outputs"]
    if accuracy.get("candidate_accuracy") is not None:
        parts.append(
            f"accuracy {100 * accuracy['candidate_accuracy']:.2f}% vs FP32 {100 * accuracy['reference_accuracy']:.2f}% "
            f"(drop {accuracy['accuracy_drop_points']:+.2f} pts)"
        )
    snr = accuracy.get("snr_db")
    parts.append(
        f"max abs err {_number(accuracy.get('max_abs_error'))}, cosine {accuracy['cosine_similarity']:.5f}, "
        f"SNR {'inf' if snr is None else f'{snr:.1f}'} dB"
    )
    if accuracy.get("iou") is not None:
        parts.append(f"IoU {accuracy['iou']:.4f}")
    parts += [f"{key} {value:.4f}" for key, value in (accuracy.get("metrics") or {}).items()]
    lines = [
        f"accuracy vs FP32 on {accuracy['samples']} samples of {accuracy.get('data')} (worst output): "
        + "; ".join(parts)
    ]
    outputs = accuracy.get("outputs") or {}
    if len(outputs) > 1:
        lines += [f"  {name}: " + _output_line(values) for name, values in outputs.items()]
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "inf" if value is None else f"{value:.3g}"


def _output_line(values: dict) -> str:
    snr = values.get("snr_db")
    parts = [] if values.get("agreement") is None else [f"agreement {100 * values['agreement']:.2f}%"]
    parts.append(f"cosine {values['cosine_similarity']:.5f}, SNR {'inf' if snr is None else f'{snr:.1f}'} dB")
    if values.get("iou") is not None:
        parts.append(f"IoU {values['iou']:.4f}")
    if values.get("nonfinite"):
        parts.append(f"{values['nonfinite']} NaN/Inf")
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    from trtopt.pipeline import build

    precision = "int8" if args.int8 else "fp16" if args.fp16 else "fp32"
    result = build(
        args.onnx,
        precision=precision,
        calib_data=args.calib_data,
        calib_method=args.calib_method,
        calib_table=args.calib_table,
        calib_samples=args.calib_samples,
        val_data=args.val_data,
        accuracy_samples=args.accuracy_samples,
        accuracy_budget=args.accuracy_budget,
        metrics=metric_settings(args),
        accept_accuracy_loss=args.accept_accuracy_loss,
        sensitivity=args.sensitivity,
        backend=args.backend,
        name=args.name,
        engines_dir=args.engines_dir,
        shapes=args.shapes,
        min_shapes=args.min_shapes,
        opt_shapes=args.opt_shapes,
        max_shapes=args.max_shapes,
        encoding=args.encoding,
        per_channel=not args.per_tensor,
        exclude_nodes=args.exclude_nodes,
        exclude_op_types=args.exclude_op_types,
        keep_io_types=args.keep_io_types,
        threads=args.threads,
        workspace_bytes=args.workspace,
        opt_level=args.opt_level,
        timing_cache=args.timing_cache,
        tf32=args.tf32,
        version_compatible=args.version_compatible,
        hardware_compat=args.hardware_compat,
        batch_size=args.batch_size,
        input_ranges=args.input_range,
        force=args.force,
        command=args.command_line,
    )
    if args.json:
        print(
            json.dumps(
                {"cache_hit": result.cache_hit, "engine_dir": str(result.engine_dir), "manifest": result.manifest},
                indent=2,
            )
        )
        return 0
    m = result.manifest
    print(f"backend: {result.backend_reason}")
    verb = (
        "cache hit (identical inputs; --force rebuilds)"
        if result.cache_hit
        else f"built in {m.get('build_seconds', 0):.1f} s"
    )
    print(
        f"{result.engine_dir}: {m['precision']} {m['backend']['name']} {m['backend']['version']} engine, "
        f"{result.engine_bytes / 1e6:.2f} MB, {verb}"
    )
    if m.get("calibration"):
        print(
            f"calibration: {m['calibration']['method']} on {m['calibration']['samples']} samples, table "
            f"{m['calibration']['table_id'][:12]}"
        )
    print(format_accuracy(m.get("accuracy")))
    if m.get("mixed_precision"):
        mixed = m["mixed_precision"]
        kept = ", ".join(entry["node"] for entry in mixed["kept_float"]) or "none"
        print(
            f"mixed precision: kept float ({mixed['float_precision']}): {kept}; searched {mixed['evaluations']} "
            f"variants in {mixed['seconds']:.1f} s"
        )
    if m.get("sensitivity"):
        ranked = ", ".join(f"{e['node']} ({e['op_type']})" for e in m["sensitivity"]["top"])
        print(f"INT8 sensitivity, most harmful first: {ranked} (all layers: {m['sensitivity']['file']})")
    warn_far_off(m, accepted=args.accept_accuracy_loss)
    return 0


def warn_far_off(manifest: dict, accepted: bool) -> None:
    """The loud part of "never silently broken": far-off accuracy and INT8 slower than FP32, on stderr."""
    far_off = (manifest.get("accuracy") or {}).get("far_off") or []
    if far_off and not accepted:
        bar = "!" * 78
        print(
            f"{bar}\nWARNING: this engine is FAR OFF FP32 (recorded in the manifest as accuracy.far_off):",
            file=sys.stderr,
        )
        for problem in far_off:
            print(f"  - {problem}", file=sys.stderr)
        print(
            "  Try --accuracy-budget (keeps harmful layers float), another --calib-method, or --fp16;\n"
            f"  --accept-accuracy-loss silences this warning.\n{bar}",
            file=sys.stderr,
        )
    timing = manifest.get("timing") or {}
    if timing.get("slower_than_fp32"):
        print(
            f"WARNING: the {manifest['precision']} engine is slower than FP32 here: {timing['median_ms']:.2f} ms vs "
            f"{timing['fp32_median_ms']:.2f} ms per batch of {timing['batch']} (speedup {timing['speedup']:.2f}x)",
            file=sys.stderr,
        )
