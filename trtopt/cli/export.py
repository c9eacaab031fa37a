"""`trtopt export`: checkpoint -> ONNX with a dynamic batch axis, verified against torch."""
from __future__ import annotations

import argparse
import json


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated batch sizes such as 1,8, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive, got {text!r}")
    return sizes


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a checkpoint to ONNX and verify it in ONNX Runtime",
                              description="Export a trtopt checkpoint to ONNX (input 'input', output 'logits', "
                                          "dynamic batch axis 'batch'), then check ONNX Runtime against torch.")
    p.add_argument("checkpoint", help="checkpoint (.pt) written by trtopt train")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch axis to the first --verify-batch size")
    p.add_argument("--verify-batch", type=_batch_sizes, default=(1, 8), metavar="B1,B2",
                   help="batch sizes to compare ONNX Runtime with torch at (default 1,8)")
    p.add_argument("--atol", type=float, default=1e-4, help="largest allowed |onnxruntime - torch|")
    p.add_argument("--exporter", choices=("auto", "torchscript", "dynamo"), default="auto",
                   help="torch exporter (auto: TorchScript while torch has it, else torch.export-based)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trtopt.export import export_onnx

    result = export_onnx(args.checkpoint, args.output, opset=args.opset, dynamic_batch=not args.static_batch,
                         verify_batch_sizes=args.verify_batch, atol=args.atol, exporter=args.exporter)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        sizes = ", ".join(map(str, result.batch_sizes))
        print(f"exported {result.model_name} to {result.path} (opset {result.opset}, {result.exporter} exporter, "
              f"{'dynamic' if result.dynamic_batch else 'static'} batch)")
        print(f"verified vs torch on {result.samples} samples at batch {sizes}: max abs diff {result.max_abs_diff:.3g} "
              f"(tolerance {args.atol:g})")
    return 0
