"""`trtopt demo`: the main job end to end on the bundled model and data."""
from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the main job: train lenet on digits (DDP), export, build FP32/FP16/INT8, benchmark",
        description="The main job: DDP training of the bundled CNN on the bundled digits, "
        "verified ONNX export, FP32/FP16/INT8 engines checked against FP32, "
        "a benchmark with HTML/JSON reports, and a summary (OUT/demo.json).",
    )
    p.add_argument("--out", default="demo", help="output folder (default ./demo)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: enough for >= 97%%)")
    p.add_argument("--nproc", type=int, default=2, help="training processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trtopt.demo import DEMO_EPOCHS, format_summary, run_demo

    def announce(step: str) -> None:
        if not args.quiet and not args.json:
            print(f"== {step}", file=sys.stderr, flush=True)

    epochs = DEMO_EPOCHS if args.epochs is None else args.epochs  # 0 is refused, not taken for "default"
    result = run_demo(args.out, epochs=epochs, nproc=args.nproc, seed=args.seed, on_step=announce)
    print(json.dumps(result.to_json(), indent=2) if args.json else format_summary(result))
    return 0
