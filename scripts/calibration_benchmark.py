#!/usr/bin/env python3
"""Calibration speed and memory: trtopt vs one plain inference pass, ONNX Runtime's and ModelOpt's calibrators.

Builds one ResNet-18-shaped ONNX (224x224, random He-initialized weights, dynamic batch) with
onnx.helper, then, for every sample count and batch size, runs each tool as its own subprocess;
the parent times it and reads its CPU time from ``os.wait4``; the child reports its own peak RSS
(VmHWM), so no run inherits another's memory. Every tool reads the same seeded inputs from the same generator.

* ``ort-pass``: one plain ONNX Runtime inference pass over the samples with default session options
  (the floor calibration is measured against: it must see every activation of every sample once).
* ``ort-pass-nospin``: the same with idle intra-op threads sleeping instead of spinning, as in
  trtopt's calibration session; on a busy host spinning costs the default pass time, so the ratio
  against this one is printed as well.
* ``trtopt``: ``trtopt.quantization.calibrate.calibrate(method="entropy")``.
* ``onnxruntime``: ``create_calibrator(..., CalibrationMethod.Entropy)`` with ``num_bins=2048`` and
  ``num_quantized_bins=128`` followed by ``collect_data`` and ``compute_data``, i.e. the
  calibration stage of ``quantize_static`` (whose own extra_options do not reach ``num_bins`` in
  current releases, leaving 128 bins and a one-candidate search).
* ``modelopt``: NVIDIA ModelOpt's ``modelopt.onnx.quantization.quantize(quantize_mode="int8",
  calibration_method="entropy", calibration_eps=["cpu"])``: its whole ONNX INT8 pass (calibration,
  which uses ONNX Runtime's calibrator with ModelOpt's own bin settings, plus Q/DQ insertion). It
  runs in a virtual environment of its own (``--modelopt-venv``, created on first use with
  ``torch==2.13.0`` (CPU build) and ``nvidia-modelopt[onnx]``), because it pins its own onnx and
  onnxruntime. If it cannot be installed or cannot run without a GPU, the output says so.

Both ONNX Runtime-based calibrators keep every intermediate output of every sample until the end
(about 20 GB at 1024 ResNet-18 samples), so ``--ort-max-samples`` skips their larger runs (noted).
Timings on a shared or small machine are noisy: the CPU time column helps to read them.

``--big-model-gb N`` instead checks bounded memory on a model above 2 GB: a chain of 4096x4096
MatMul+Relu layers whose weights (N GiB) live in an external data file, calibrated (and run once
plainly) on random 4096-wide inputs; the peak RSS is compared with the weights' size.

Usage: python scripts/calibration_benchmark.py [--samples 64 256 1024] [--batch-sizes 1 16]
       python scripts/calibration_benchmark.py --big-model-gb 2.2 --samples 16 --batch-sizes 4
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
from modelopt_env import modelopt_python

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


BIG_WIDTH = 4096


def build_big_model(folder: Path, gigabytes: float, seed: int = 0) -> Path:
    """MatMul+Relu layers of BIG_WIDTH^2 float32 weights, written straight to one external data file."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    layer_bytes = BIG_WIDTH * BIG_WIDTH * 4
    layers = max(1, int(np.ceil(gigabytes * 2**30 / layer_bytes)))
    nodes, inits, x = [], [], "input"
    with open(folder / "weights.bin", "wb") as weights:
        for index in range(layers):
            offset = weights.tell()
            weights.write((rng.standard_normal((BIG_WIDTH, BIG_WIDTH), dtype=np.float32)
                           * np.float32(np.sqrt(2.0 / BIG_WIDTH))).tobytes())
            tensor = onnx.TensorProto(name=f"w{index}", data_type=TensorProto.FLOAT, dims=[BIG_WIDTH, BIG_WIDTH],
                                      data_location=TensorProto.EXTERNAL)
            for key, value in (("location", "weights.bin"), ("offset", str(offset)), ("length", str(layer_bytes))):
                tensor.external_data.add(key=key, value=value)
            inits.append(tensor)
            nodes.append(helper.make_node("MatMul", [x, f"w{index}"], [f"mm{index}"]))
            nodes.append(helper.make_node("Relu", [f"mm{index}"], [f"relu{index}"]))
            x = f"relu{index}"
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", BIG_WIDTH])]
    outputs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", BIG_WIDTH])]
    graph = helper.make_graph(nodes, "big", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save_model(model, folder / "big.onnx")
    return folder / "big.onnx"


def feeds(samples: int, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """The same seeded images for both tools, generated batch by batch (never all at once)."""
    for start in range(0, samples, batch_size):
        rows = min(batch_size, samples - start)
        rng = np.random.default_rng(start)
        shape = (rows, BIG_WIDTH) if os.environ.get("BENCH_BIG") else (rows, 3, SIZE, SIZE)
        yield {"input": rng.standard_normal(shape, dtype=np.float32)}


def load_data() -> Iterator[
    dict[str, np.ndarray]
]:  # trtopt's loader entry point (file.py:function); sizes come from the environment
    return feeds(int(os.environ["BENCH_SAMPLES"]), int(os.environ["BENCH_BATCH"]))


TOOLS = ("ort-pass", "ort-pass-nospin", "trtopt", "onnxruntime", "modelopt")


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol (plus ModelOpt's get_first) over :func:`feeds`."""

    def __init__(self, samples: int, batch_size: int) -> None:
        self.samples, self.batch_size = samples, batch_size
        self.batches = feeds(samples, batch_size)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)

    def rewind(self) -> None:
        self.batches = feeds(self.samples, self.batch_size)

    def get_first(self) -> dict[str, np.ndarray]:
        return next(feeds(self.samples, self.batch_size))


def _plain_pass(model: Path, samples: int, batch_size: int, spinning: bool = True) -> int:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not spinning:  # as trtopt's calibration session runs: idle intra-op threads sleep
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(os.fspath(model), options, providers=["CPUExecutionProvider"])
    for feed in feeds(samples, batch_size):
        session.run(None, feed)
    return 0


def _trtopt(model: Path, samples: int, batch_size: int) -> int:
    from trtopt.quantization.calibrate import calibrate

    table = calibrate(model, f"{Path(__file__).resolve()}:load_data", method="entropy", batch_size=batch_size,
                      samples=samples)
    return len(table.tensors)


def _onnxruntime(model: Path, samples: int, batch_size: int) -> int:
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

    reader = type("Reader", (_Reader, CalibrationDataReader), {})(samples, batch_size)
    with tempfile.TemporaryDirectory() as folder:
        calibrator = create_calibrator(model, augmented_model_path=os.path.join(folder, "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.Entropy,
                                       extra_options={"num_bins": 2048, "num_quantized_bins": 128, "symmetric": True})
        calibrator.collect_data(reader)
        return len(list(calibrator.compute_data().keys()))


def _modelopt(model: Path, samples: int, batch_size: int) -> int:
    import onnx
    from modelopt.onnx.quantization import quantize
    from onnxruntime.quantization.calibrate import CalibrationDataReader

    reader = type("Reader", (_Reader, CalibrationDataReader), {})(samples, batch_size)
    with tempfile.TemporaryDirectory() as folder:
        output = os.path.join(folder, "int8.onnx")
        quantize(os.fspath(model), quantize_mode="int8", calibration_data_reader=reader, calibration_method="entropy",
                 calibration_eps=["cpu"], output_path=output, log_level="ERROR")
        return sum(node.op_type == "QuantizeLinear" for node in onnx.load(output, load_external_data=False).graph.node)


def worker(tool: str, model: Path, samples: int, batch_size: int) -> None:
    """One measured run; prints the number of calibrated tensors (Q nodes for ModelOpt) as JSON."""
    if tool == "ort-pass-nospin":
        count = _plain_pass(model, samples, batch_size, spinning=False)
    else:
        run = {"ort-pass": _plain_pass, "trtopt": _trtopt, "onnxruntime": _onnxruntime, "modelopt": _modelopt}[tool]
        count = run(model, samples, batch_size)
    print(json.dumps({"tensors": count, "peak_rss_mb": _own_peak_rss_mb()}))


def _own_peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ``ru_maxrss`` from wait4: Linux carries the parent's
    high-water mark over fork and exec, so a child would never report less than the parent held."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def measure(tool: str, python: str, model: Path, samples: int, batch_size: int) -> dict:
    env = {**os.environ, "BENCH_SAMPLES": str(samples), "BENCH_BATCH": str(batch_size), "TRTOPT_NO_PROGRESS": "1"}
    load = os.getloadavg()[0]  # what else ran on the host (the previous tool's run included)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen([python, __file__, "--worker", tool, str(model), str(samples), str(batch_size)],
                                 env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)  # reaps the child: its own peak RSS and CPU time
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        output, errors = out.read(), err.read()
    ok = os.waitstatus_to_exitcode(status) == 0
    lines = [line for line in errors.splitlines() if line.strip()]
    report = json.loads(output.strip().splitlines()[-1]) if ok else {}
    return {"tool": tool, "samples": samples, "batch": batch_size, "ok": ok, "wall_s": wall,
            "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": report.get("peak_rss_mb", usage.ru_maxrss / 1024),
            "tensors": report.get("tensors"), "load": load,
            "error": None if ok else (lines[-1] if lines else f"exit status {os.waitstatus_to_exitcode(status)}")}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--ort-max-samples", type=int, default=256,
                        help="skip the ONNX Runtime-based calibrators (onnxruntime, modelopt) above this many samples "
                             "(they hold every activation: ~20 GB at 1024)")
    parser.add_argument("--modelopt-venv", type=Path, default=Path.home() / ".cache" / "trtopt-bench" / "modelopt-venv",
                        help="ModelOpt's virtual environment, created on first use (default %(default)s)")
    parser.add_argument("--big-model-gb", type=float,
                        help="only check bounded memory on a model with this many GiB of external weights")
    args = parser.parse_args()
    if args.big_model_gb:
        return big_model_check(args.big_model_gb, args.samples, args.batch_sizes)
    pythons = {tool: sys.executable for tool in args.tools}
    notes = []
    if "modelopt" in pythons:
        python, note = modelopt_python(args.modelopt_venv)
        notes.append(note)
        if python is None:
            del pythons["modelopt"]
        else:
            pythons["modelopt"] = os.fspath(python)
    print(f"host: {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    with tempfile.TemporaryDirectory(prefix="calib-bench-") as folder:
        model = build_resnet18(Path(folder) / "resnet18.onnx")
        results = []
        # tools interleaved per configuration: load that drifts during the run hits them alike
        for batch_size in args.batch_sizes:
            for samples in args.samples:
                for tool, python in pythons.items():
                    if tool in ("onnxruntime", "modelopt") and samples > args.ort_max_samples:
                        notes.append(f"{tool} at {samples} samples, batch {batch_size}: skipped (--ort-max-samples "
                                     f"{args.ort_max_samples})")
                        continue
                    results.append(measure(tool, python, model, samples, batch_size))
                    print(_row(results[-1]), flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    _summary(results, notes)
    return 0


def big_model_check(gigabytes: float, samples: list[int], batch_sizes: list[int]) -> int:
    """trtopt and one plain pass on a model above 2 GB; peak RSS against the weights' size."""
    os.environ["BENCH_BIG"] = "1"
    with tempfile.TemporaryDirectory(prefix="calib-bench-big-") as folder:
        model = build_big_model(Path(folder), gigabytes)
        weights_mb = (Path(folder) / "weights.bin").stat().st_size / 2**20
        print(f"model: {model.stat().st_size} bytes of graph, {weights_mb:.0f} MB of external weights", flush=True)
        for batch_size in batch_sizes:
            for count in samples:
                for tool in ("ort-pass", "trtopt"):
                    result = measure(tool, sys.executable, model, count, batch_size)
                    print(_row(result) + f"  peak RSS / weights {result['peak_rss_mb'] / weights_mb:.2f}", flush=True)
    return 0


def _row(r: dict) -> str:
    status = "" if r["ok"] else f"  FAILED: {r['error']}"
    return (f"{r['tool']:<12} samples {r['samples']:>5}  batch {r['batch']:>3}  wall {r['wall_s']:7.1f} s  "
            f"CPU {r['cpu_s']:7.1f} s  peak RSS {r['peak_rss_mb']:7.0f} MB  tensors {r['tensors']}  "
            f"load {r['load']:.1f}{status}")


def _ratio(numerator: dict | None, denominator: dict | None, key: str) -> float | None:
    return numerator[key] / denominator[key] if numerator and denominator else None


def _verdict(value: float | None, target: str, good: bool) -> str:
    return "not measured" if value is None else f"{value:.2f} ({target}: {'met' if good else 'NOT met'})"


def _summary(results: list[dict], notes: list[str]) -> None:
    print("\n| tool | batch | samples | wall s | CPU s | peak RSS MB | load before |\n|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['tool']} | {r['batch']} | {r['samples']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {r['load']:.1f} |" + ("" if r["ok"] else f" failed: {r['error']}"))
    by_key = {(r["tool"], r["batch"], r["samples"]): r for r in results if r["ok"]}
    print()
    for batch in sorted({r["batch"] for r in results}):
        for samples in sorted({r["samples"] for r in results if r["batch"] == batch}):
            ours = by_key.get(("trtopt", batch, samples))
            plain = _ratio(ours, by_key.get(("ort-pass", batch, samples)), "wall_s")
            nospin = _ratio(ours, by_key.get(("ort-pass-nospin", batch, samples)), "wall_s")
            speedup = _ratio(by_key.get(("onnxruntime", batch, samples)), ours, "wall_s")
            memory = _ratio(ours, by_key.get(("onnxruntime", batch, samples)), "peak_rss_mb")
            modelopt = _ratio(by_key.get(("modelopt", batch, samples)), ours, "wall_s")
            within = _verdict(plain, "<= 1.5", (plain or 9) <= 1.5)
            print(f"batch {batch}, {samples} samples: trtopt / plain pass wall {within} "
                  f"(/ plain pass without spinning: {'not measured' if nospin is None else f'{nospin:.2f}'}); "
                  f"ORT entropy / trtopt wall {_verdict(speedup, '>= 5', (speedup or 0) >= 5)}; "
                  f"trtopt / ORT peak RSS {_verdict(memory, '<= 0.10', (memory or 9) <= 0.10)}; "
                  f"ModelOpt / trtopt wall {'not measured' if modelopt is None else f'{modelopt:.2f}'}")
        sizes = sorted(s for (t, b, s) in by_key if t == "trtopt" and b == batch)
        if len(sizes) > 1:
            growth = _ratio(by_key[("trtopt", batch, sizes[-1])], by_key[("trtopt", batch, sizes[0])], "peak_rss_mb")
            print(f"batch {batch}: trtopt peak RSS {sizes[0]} -> {sizes[-1]} samples: "
                  f"{_verdict(growth - 1 if growth else None, '<= +0.20', growth is not None and growth <= 1.2)}")
    for note in notes:
        print("note:", note)


if __name__ == "__main__":
    sys.exit(main())
