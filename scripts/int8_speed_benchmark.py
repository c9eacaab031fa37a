#!/usr/bin/env python3
"""INT8 vs FP32 throughput on ONNX Runtime (CPU), ResNet-18 at 224x224, measured in one run.

Exports the zoo's ``resnet18`` (random init: speed does not depend on trained weights) with torch,
calibrates it on seeded random inputs, writes the Q/DQ model in the ``onnxruntime-cpu`` encoding
(and optionally ``tensorrt`` for reference), and builds each through the ONNX Runtime backend, so
the benchmark times exactly what ``trtopt build`` produces. The gate compares the INT8 engine with
the FP32 engine (ONNX Runtime's saved optimized model, itself faster than the exported file); the
exported FP32 ONNX is timed too and its ratio printed. All models run with the same thread
count; rounds alternate between models so a busy neighbour slows every model alike, and the first
call after each switch is left untimed (the previous session's threads are still spin-waiting). The load
average before and after is printed: a shared machine makes absolute numbers noisy, the ratio
less so.

Gate: INT8 ``onnxruntime-cpu`` throughput at batch 8 >= 1.8x FP32.

Usage: python scripts/int8_speed_benchmark.py [--batch 8] [--threads 2] [--rounds 15] [--tensorrt-encoding]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET = 1.8


def export_resnet18(path: Path, size: int) -> Path:
    """The zoo ResNet-18 (ImageNet-like head), random init, dynamic batch."""
    import torch

    from trtopt.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet18").eval()
    example = torch.randn(1, 3, size, size)
    torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["logits"], opset_version=17,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return path


def build_engines(fp32: Path, work: Path, encodings: list[str], threads: int, calib_samples: int) -> dict[str, object]:
    """label -> Runner, each built by the ONNX Runtime backend from the model trtopt writes."""
    from trtopt.backends.onnxruntime import BACKEND
    from trtopt.backends.registry import BuildOptions
    from trtopt.settings import EngineSettings
    from trtopt.quantization.calibrate import calibrate
    from trtopt.quantization.qdq import quantize

    table = calibrate(fp32, "random", method="max", max_samples=calib_samples, batch_size=8, threads=threads)
    models: dict[str, tuple[Path, str | None]] = {"fp32 engine": (fp32, None)}
    for encoding in encodings:
        models[f"int8 ({encoding})"] = (quantize(fp32, table, work / f"int8-{encoding}.onnx", encoding=encoding).path,
                                        encoding)
    from trtopt.backends.onnxruntime import OnnxRuntimeRunner

    # the exported ONNX as a user would run it without trtopt, next to trtopt's FP32 engine
    runners = {"fp32 (exported ONNX)": OnnxRuntimeRunner(fp32, threads=threads)}
    for label, (path, encoding) in models.items():
        folder = work / label.replace(" ", "_").replace("(", "").replace(")", "")
        folder.mkdir()
        built = BACKEND.build(path, folder, BuildOptions(encoding=encoding, engine=EngineSettings(threads=threads)))
        runners[label] = BACKEND.load(folder, {"engine": {"file": built.engine_file}, "io": {}})
    return runners


def measure(runners: dict[str, object], batch: int, size: int, rounds: int, warmup: int) -> dict[str, list[float]]:
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    feed = {"input": x}
    for runner in runners.values():
        for _ in range(warmup):
            runner.infer(feed)
    times: dict[str, list[float]] = {label: [] for label in runners}
    for _ in range(rounds):  # interleaved: contention hits every model in turn
        for label, runner in runners.items():
            # One untimed call after each switch: the previous session's intra-op threads keep
            # spin-waiting for a while and would otherwise be charged to whichever model runs next.
            runner.infer(feed)
            tic = time.perf_counter()
            runner.infer(feed)
            times[label].append(time.perf_counter() - tic)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for every model (default 2)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument(
        "--tensorrt-encoding", action="store_true", help="also time the tensorrt encoding (reference only)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="int8-speed-") as tmp:
        work = Path(tmp)
        fp32 = export_resnet18(work / "resnet18.onnx", args.size)
        encodings = ["onnxruntime-cpu"] + (["tensorrt"] if args.tensorrt_encoding else [])
        runners = build_engines(fp32, work, encodings, args.threads, args.calib_samples)
        times = measure(runners, args.batch, args.size, args.rounds, args.warmup)
        for runner in runners.values():
            runner.close()
    load_after = os.getloadavg()

    base = float(np.median(times["fp32 engine"]))
    rows = []
    for label, values in times.items():
        median = float(np.median(values))
        rows.append({"model": label, "median_ms": 1000 * median, "p90_ms": 1000 * float(np.percentile(values, 90)),
                     "throughput": args.batch / median, "vs_fp32": base / median})
    ratio = next(r["vs_fp32"] for r in rows if r["model"] == "int8 (onnxruntime-cpu)")
    vs_exported = float(np.median(times["fp32 (exported ONNX)"])) / float(np.median(times["int8 (onnxruntime-cpu)"]))
    from trtopt.bench.environment import collect

    report = {"batch": args.batch, "size": args.size, "threads": args.threads, "rounds": args.rounds, "rows": rows,
              "int8_vs_fp32": ratio, "int8_vs_exported_fp32": vs_exported, "target": TARGET, "passed": ratio >= TARGET,
              "load_average": {"before": load_before, "after": load_after}, "environment": collect(args.threads)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"ResNet-18 {args.size}x{args.size}, batch {args.batch}, {args.threads} threads, {args.rounds} "
            "interleaved rounds; "
            f"{report['environment']['cpu']}, onnxruntime {report['environment']['libraries'].get('onnxruntime')}"
        )
        print("| model | median ms | p90 ms | samples/s | vs FP32 engine |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['model']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['throughput']:.1f} | "
                f"{r['vs_fp32']:.2f}x |"
            )
        print(
            f"INT8 (onnxruntime-cpu) / FP32 engine throughput: {ratio:.2f}x (target >= {TARGET}x): "
            f"{'PASS' if ratio >= TARGET else 'FAIL'}; vs the exported FP32 ONNX: {vs_exported:.2f}x"
        )
        print(
            f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} CPUs "
            "(above the CPU count means other work competed for the cores)"
        )
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
