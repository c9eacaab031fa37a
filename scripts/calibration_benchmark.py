#!/usr/bin/env python3
"""Calibration speed and memory: trtopt's streaming entropy vs ONNX Runtime's entropy calibrator.

Builds one ResNet-18-shaped ONNX (224x224, random He-initialized weights, dynamic batch) with
onnx.helper, then calibrates it at several sample counts and batch sizes. Every run is its own
subprocess; the parent reads that child's peak RSS from ``os.wait4`` and times it, so no run
inherits another's memory. Both tools read the same seeded inputs from the same generator.

ONNX Runtime side: ``create_calibrator(..., CalibrationMethod.Entropy)`` with ``num_bins=2048`` and
``num_quantized_bins=128`` followed by ``collect_data`` and ``compute_data``, i.e. the calibration
stage of ``quantize_static`` (whose own extra_options do not reach ``num_bins`` in current
releases, leaving 128 bins and a one-candidate search). ONNX Runtime keeps every intermediate
output of every sample until the end, so large sample counts can exceed the machine's memory:
``--ort-max-samples`` skips those runs (noted in the table).

Usage: python scripts/calibration_benchmark.py [--samples 64 256 1024] [--batch-sizes 1 16]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SIZE = 224


def build_resnet18(path: Path, seed: int = 0) -> Path:
    """ResNet-18 topology (BatchNorm folded into conv biases), random weights, dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(x: str, out_ch: int, in_ch: int, k: int, stride: int, name: str, relu: bool = True) -> str:
        std = np.sqrt(2.0 / (in_ch * k * k))
        inits.append(
            numpy_helper.from_array((rng.standard_normal((out_ch, in_ch, k, k)) * std).astype(np.float32), f"{name}.w")
        )
        inits.append(numpy_helper.from_array((rng.standard_normal(out_ch) * 0.05).astype(np.float32), f"{name}.b"))
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.out"], name=name,
                                      kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4))
        if not relu:
            return f"{name}.out"
        nodes.append(helper.make_node("Relu", [f"{name}.out"], [f"{name}.relu"]))
        return f"{name}.relu"

    x = conv("input", 64, 3, 7, 2, "stem")
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, channels = "pool", 64
    for stage, width in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            name = f"layer{stage + 1}.{block}"
            y = conv(x, width, channels, 3, stride, f"{name}.conv1")
            y = conv(y, width, width, 3, 1, f"{name}.conv2", relu=False)
            shortcut = (
                conv(x, width, channels, 1, stride, f"{name}.down", relu=False)
                if stride != 1 or channels != width
                else x
            )
            nodes.append(helper.make_node("Add", [y, shortcut], [f"{name}.add"]))
            nodes.append(helper.make_node("Relu", [f"{name}.add"], [f"{name}.out"]))
            x, channels = f"{name}.out", width
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    inits.append(numpy_helper.from_array((rng.standard_normal((1000, 512)) * 0.03).astype(np.float32), "fc.w"))
    inits.append(numpy_helper.from_array(np.zeros(1000, np.float32), "fc.b"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes,
        "resnet18",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def feeds(samples: int, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """The same seeded images for both tools, generated batch by batch (never all at once)."""
    for start in range(0, samples, batch_size):
        rows = min(batch_size, samples - start)
        rng = np.random.default_rng(start)
        yield {"input": rng.standard_normal((rows, 3, SIZE, SIZE), dtype=np.float32)}


def load_data() -> Iterator[
    dict[str, np.ndarray]
]:  # trtopt's loader entry point (file.py:function); sizes come from the environment
    return feeds(int(os.environ["BENCH_SAMPLES"]), int(os.environ["BENCH_BATCH"]))


def worker(tool: str, model: Path, samples: int, batch_size: int) -> None:
    if tool == "trtopt":
        from trtopt.quantization.calibrate import calibrate

        table = calibrate(model, f"{Path(__file__).resolve()}:load_data", method="entropy", batch_size=batch_size)
        amax = {name: stats.amax for name, stats in table.tensors.items()}
    else:
        from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = feeds(samples, batch_size)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.batches, None)

        with tempfile.TemporaryDirectory() as folder:
            calibrator = create_calibrator(
                model,
                augmented_model_path=os.path.join(folder, "augmented.onnx"),
                calibrate_method=CalibrationMethod.Entropy,
                extra_options={"num_bins": 2048, "num_quantized_bins": 128, "symmetric": True},
            )
            calibrator.collect_data(Reader())
            ranges = calibrator.compute_data()
        amax = {
            name: float(max(abs(float(r.range_value[0])), abs(float(r.range_value[1])))) for name, r in ranges.items()
        }
    print(json.dumps({"tensors": len(amax)}))


def measure(tool: str, model: Path, samples: int, batch_size: int, threads: int | None) -> dict:
    env = {**os.environ, "BENCH_SAMPLES": str(samples), "BENCH_BATCH": str(batch_size), "TRTOPT_NO_PROGRESS": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, "--worker", tool, str(model), str(samples), str(batch_size)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    output = child.stdout.read() if child.stdout else ""
    ok = os.waitstatus_to_exitcode(status) == 0
    return {
        "tool": tool,
        "samples": samples,
        "batch": batch_size,
        "ok": ok,
        "wall_s": wall,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "tensors": json.loads(output.strip().splitlines()[-1])["tensors"] if ok else None,
    }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument(
        "--ort-max-samples",
        type=int,
        default=256,
        help="skip ONNX Runtime above this many samples (it holds every activation: ~20 GB at 1024)",
    )
    parser.add_argument(
        "--ort-batch-sizes", type=int, nargs="+", help="batch sizes for ONNX Runtime (default: --batch-sizes)"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    with tempfile.TemporaryDirectory(prefix="calib-bench-") as folder:
        model = build_resnet18(Path(folder) / "resnet18.onnx")
        results, skipped = [], []
        for batch_size in args.batch_sizes:
            for samples in args.samples:
                results.append(measure("trtopt", model, samples, batch_size, None))
                print(_row(results[-1]), flush=True)
        for batch_size in args.ort_batch_sizes or args.batch_sizes:
            for samples in args.samples:
                if samples > args.ort_max_samples:
                    skipped.append(
                        f"onnxruntime at {samples} samples, batch {batch_size}: skipped (--ort-max-samples "
                        f"{args.ort_max_samples})"
                    )
                    continue
                results.append(measure("onnxruntime", model, samples, batch_size, None))
                print(_row(results[-1]), flush=True)
    _summary(results, skipped)
    return 0


def _row(r: dict) -> str:
    status = "" if r["ok"] else "  FAILED"
    return (f"{r['tool']:<12} samples {r['samples']:>5}  batch {r['batch']:>3}  wall {r['wall_s']:8.1f} s  "
            f"peak RSS {r['peak_rss_mb']:8.0f} MB  tensors {r['tensors']}{status}")


def _summary(results: list[dict], skipped: list[str]) -> None:
    print("\n| tool | batch | samples | wall s | peak RSS MB |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['tool']} | {r['batch']} | {r['samples']} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} |")
    by_key = {(r["tool"], r["batch"], r["samples"]): r for r in results if r["ok"]}
    print()
    for (tool, batch, samples), r in sorted(by_key.items()):
        if tool != "trtopt":
            continue
        smallest = min(s for (t, b, s) in by_key if t == "trtopt" and b == batch)
        if samples != smallest:
            growth = r["peak_rss_mb"] / by_key[("trtopt", batch, smallest)]["peak_rss_mb"] - 1
            print(f"trtopt batch {batch}: peak RSS {smallest} -> {samples} samples: {growth:+.1%} (target <= +20%)")
        ort = by_key.get(("onnxruntime", batch, samples))
        if ort:
            print(f"batch {batch}, {samples} samples: trtopt/ORT peak RSS {r['peak_rss_mb'] / ort['peak_rss_mb']:.2f} "
                  f"(target <= 0.25), ORT/trtopt wall time {ort['wall_s'] / r['wall_s']:.1f}x (target >= 3x)")
    for note in skipped:
        print("note:", note)


if __name__ == "__main__":
    sys.exit(main())
