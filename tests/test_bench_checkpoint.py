"""Checkpoint targets (PyTorch eager) beside their ONNX export, on labelled data; the light import path."""
from __future__ import annotations

import subprocess
import sys

from trtopt.bench import benchmark


def test_onnx_export_agrees_with_its_checkpoint_baseline(trained_lenet) -> None:  # noqa: ANN001 - conftest fixture
    report = benchmark([f"onnx={trained_lenet.onnx}"], f"eager={trained_lenet.checkpoint}", data="digits", samples=64,
                       scenarios=("single-stream",), threads=1, max_time_s=0.3, warmup_s=0.05)
    eager, onnx = report["targets"]
    assert eager["backend"] == "torch-eager" and eager["kind"] == "checkpoint"
    assert report["inputs"]["labelled"] and eager["task_accuracy"] > 0.8
    assert onnx["accuracy"]["top1_agreement"] == 1.0 and onnx["accuracy"]["max_abs_error"] < 1e-3
    assert onnx["task_accuracy"] == eager["task_accuracy"]


def test_bench_modules_do_not_import_torch() -> None:
    code = ("import sys, trtopt.bench, trtopt.bench.suite, trtopt.cli.bench, trtopt.bench.targets;"
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
