"""`trtopt build`: ONNX -> engines/NAME (FP32, FP16 or INT8), with accuracy vs FP32 measured at build."""

from __future__ import annotations

import argparse
import json
import sys

from trtopt.cli.groups import add_build_groups, build_settings
from trtopt.settings import DEFAULT_MAX_BATCH


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "build",
        help="build an engine (FP32, --fp16 or --int8) into engines/NAME and check it against FP32",
        description="Build engines/NAME from an FP32 ONNX: calibrate and insert Q/DQ (--int8) or convert to mixed "
        "FP16 (--fp16), build with the chosen backend, then compare the engine with the FP32 ONNX on "
        "held-out samples. Identical inputs reuse the existing engine (--force rebuilds). Without "
        f"--shapes/--max-shapes, a dynamic batch axis is built for batches 1..{DEFAULT_MAX_BATCH} (--max-batch) "
        "with every backend: an ONNX Runtime engine rejects a larger batch too.",
    )
    p.add_argument("onnx", help="FP32 ONNX model")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--int8", action="store_true", help="explicit INT8 (Q/DQ) from calibration")
    precision.add_argument("--fp16", action="store_true", help="mixed precision FP16 (I/O stay FP32)")
    add_build_groups(p)
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=run)


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
    settings = build_settings(args, precision=precision, command=args.command_line)
    result = build(args.onnx, settings)
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
    coverage = m["model"].get("int8_coverage")
    mostly_float = " (mostly float: see the WARNING)" if coverage and coverage["warning"] else ""
    print(
        f"{result.engine_dir}: {m['precision']}{mostly_float} {m['backend']['name']} {m['backend']['version']} "
        f"engine, {result.engine_bytes / 1e6:.2f} MB, {verb}"
    )
    if m.get("calibration"):
        print(
            f"calibration: {m['calibration']['method']} on {m['calibration']['samples']} samples, table "
            f"{m['calibration']['table_id'][:12]}"
        )
    if coverage:
        print(f"INT8 coverage: {coverage['summary']}")
    print(format_accuracy(m.get("accuracy")))
    timing = m.get("timing") or {}
    if timing.get("speedup") is not None:
        print(
            f"speed vs FP32: {timing['speedup']:.2f}x ({timing['speed_vs_fp32']}; batch of {timing['batch']}, fastest "
            f"of {timing['timing_rounds']} interleaved rounds: {timing['fastest_ms']:.2f} ms vs "
            f"{timing['fp32_fastest_ms']:.2f} ms)"
        )
    if m.get("mixed_precision"):
        mixed = m["mixed_precision"]
        kept = ", ".join(entry["node"] for entry in mixed["kept_float"]) or "none"
        cost = mixed.get("cost_vs_calibration")
        print(
            f"mixed precision: {len(mixed['kept_float'])} layer(s) kept float ({mixed['float_precision']}): {kept}; "
            f"searched {mixed['evaluations']} variants in {mixed['seconds']:.1f} s"
            + ("" if cost is None else f" ({cost:.1f}x the calibration)")
        )
    if m.get("sensitivity"):
        ranked = ", ".join(f"{e['node']} ({e['op_type']})" for e in m["sensitivity"]["top"])
        print(f"INT8 sensitivity, most harmful first: {ranked} (all layers: {m['sensitivity']['file']})")
    warn_far_off(m, accepted=settings.accuracy.accept_loss)
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
            f"WARNING: the {manifest['precision']} engine is slower than FP32 here: {timing['fastest_ms']:.2f} ms vs "
            f"{timing['fp32_fastest_ms']:.2f} ms per batch of {timing['batch']} (speedup {timing['speedup']:.2f}x, "
            f"fastest of {timing['timing_rounds']} interleaved rounds; the medians agree)",
            file=sys.stderr,
        )
