"""`trtopt quantize`: FP32 ONNX + scale table -> Q/DQ INT8 ONNX, or --fp16 -> mixed precision ONNX."""
from __future__ import annotations

import argparse
import sys

from trtopt.cli.groups import CALIBRATION, OUTPUT, QDQ


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "quantize", help="write a Q/DQ INT8 ONNX from a scale table (or an FP16 ONNX with --fp16)",
        description="Insert QuantizeLinear/DequantizeLinear per TensorRT's placement rules using a scale table "
                    "from `trtopt calibrate`, or convert to mixed FP16 with --fp16 (scale table optional: its ranges "
                    "keep overflow-prone nodes in FP32).")
    p.add_argument("onnx", help="FP32 ONNX model")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    p.add_argument("--fp16", action="store_true", help="convert to mixed precision FP16 instead of INT8")
    CALIBRATION.add(p, only=["table"])
    QDQ.add(p)
    OUTPUT.add(p, only=["force"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trtopt.errors import UsageError
    from trtopt.quantization.table import ScaleTable

    path, qdq, force = CALIBRATION.parse(args).table, QDQ.parse(args), args.build_force
    table = ScaleTable.load(path) if path else None
    if args.fp16:
        from trtopt.quantization.fp16 import convert_fp16

        result = convert_fp16(args.onnx, args.output, scales=table, keep_io_types=qdq.keep_io_types,
                              exclude_nodes=qdq.exclude_nodes, exclude_op_types=qdq.exclude_op_types, force=force)
        print(f"wrote {result.path}: {result.converted_nodes} nodes in FP16, {len(result.kept_fp32)} kept in FP32")
        for node, reason in result.kept_fp32.items():
            print(f"  {node}: {reason}")
        return 0
    if table is None:
        raise UsageError(
            "INT8 quantization needs --calib-table TABLE.json (run `trtopt calibrate MODEL.onnx --calib-data SRC "
            "-o TABLE.json` first), or use --fp16"
        )
    import onnx

    from trtopt.quantization.coverage import FloatChoices, int8_coverage
    from trtopt.quantization.qdq import quantize

    result = quantize(args.onnx, table, args.output, encoding=qdq.encoding or "onnxruntime-cpu",
                      per_channel=qdq.per_channel, exclude_nodes=qdq.exclude_nodes,
                      exclude_op_types=qdq.exclude_op_types, force=force)
    print(
        f"wrote {result.path} ({result.encoding} encoding, opset {result.opset}): "
        f"{len(result.activations)} activations and {len(result.weights)} weights quantized"
    )
    if result.missing_scales:
        print(f"  left in float (no scale in the table): {', '.join(result.missing_scales)}")
    coverage = int8_coverage(onnx.load(result.path, load_external_data=False),
                             FloatChoices.of(qdq, result.missing_scales))
    print(f"INT8 coverage: {coverage.summary()}")
    if warning := coverage.warning():
        print(f"WARNING: {args.onnx}: {warning}", file=sys.stderr)
    return 0
