"""Shared test helpers: small real ONNX models built in the test run (no downloads), a trained
model, the one CLI subprocess helper, the one GPU skip (tests marked ``tensorrt`` or ``cuda``), and the
hand-made scale table and engine reader that scripts/hostile_cases.py shares with the tests."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

os.environ.setdefault("TRTOPT_NO_PROGRESS", "1")


CLI_ENV = {"TRTOPT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}  # the test machine's cores are shared


def run_cli(*args: object, cwd: Path | None = None, timeout: float = 300,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m trtopt ARGS`` in a real subprocess, text output captured (`env` adds variables)."""
    return subprocess.run([sys.executable, "-m", "trtopt", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env={**os.environ, **CLI_ENV, **(env or {})})


@functools.cache
def _gpu_status(need: str) -> tuple[bool, str]:
    if need == "tensorrt":
        from trtopt.backends.registry import get_backend

        return get_backend("tensorrt").availability()
    from trtopt.cuda.device import probe_devices

    count, why = probe_devices()
    return count > 0, why


def pytest_runtest_setup(item: pytest.Item) -> None:
    """The one GPU skip: tests marked ``tensorrt`` need TensorRT and a CUDA GPU, ``cuda`` a CUDA GPU.

    A setup hook rather than a fixture, so it runs before any (module-scoped) fixture tries to build
    an engine; the skip states what is missing."""
    for need, what in (("tensorrt", "TensorRT and a CUDA GPU"), ("cuda", "cuda-python and a CUDA GPU")):
        if item.get_closest_marker(need) is not None:
            usable, why = _gpu_status(need)
            if not usable:
                pytest.skip(f"needs {what}: {why}")


def make_residual_convnet(path: Path, channels: int = 3, size: int = 16, classes: int = 10, seed: int = 0,
                          dtype: int = TensorProto.FLOAT, opset: int = 17) -> Path:
    """Conv-Relu-Conv + residual Add -> Relu -> MaxPool -> GlobalAveragePool -> Flatten -> Gemm.

    Input "input" [batch, channels, size, size] with a dynamic batch axis; output "logits".
    Covers the op patterns Q/DQ placement cares about (conv inputs, residual add, pooling, Gemm).
    """
    rng = np.random.default_rng(seed)
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    width = 8

    def init(name: str, shape: tuple[int, ...], scale: float) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np_dtype), name)

    inits = [
        init("conv0.w", (width, channels, 3, 3), 0.3), init("conv0.b", (width,), 0.1),
        init("conv1.w", (width, width, 3, 3), 0.2), init("conv1.b", (width,), 0.1),
        init("conv2.w", (width, width, 3, 3), 0.2), init("conv2.b", (width,), 0.1),
        init("fc.w", (classes, width), 0.5), init("fc.b", (classes,), 0.1),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv0.w", "conv0.b"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", "conv1.w", "conv1.b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "conv2.w", "conv2.b"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r0"], ["sum"], name="residual_add"),
        helper.make_node("Relu", ["sum"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["mp"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["mp"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "residual_convnet",
        [helper.make_tensor_value_info("input", dtype, ["batch", channels, size, size])],
        [helper.make_tensor_value_info("logits", dtype, ["batch", classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="trtopt-tests")
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture
def residual_convnet(tmp_path: Path) -> Path:
    return make_residual_convnet(tmp_path / "residual_convnet.onnx")


def write_scale_table(path: Path, model: Path, tensors: object) -> Path:
    """A scale table for `model` with `tensors` written as given, unchecked: the way to hand-make a bad one."""
    from trtopt.fileio import sha256_file

    path.write_text(
        json.dumps(
            {
                "format": "trtopt-scale-table",
                "version": 1,
                "model_sha256": sha256_file(model),
                "method": "max",
                "params": {},
                "num_samples": 1,
                "tensors": tensors,
            }
        )
    )
    return path


# Run as `python -c ENGINE_READER ENGINE_DIR STOP_FILE`: loads the engine and infers in a loop until STOP_FILE
# exists, while others replace the engine. Says "N loads, M failed" and the first failure on stderr; exits 1
# if any load failed or none happened.
ENGINE_READER = """
import sys
from pathlib import Path
import numpy as np
from trtopt.repository import load

engine, stop = Path(sys.argv[1]), Path(sys.argv[2])
x = np.zeros((1, 3, 16, 16), np.float32)
reads, failures = 0, []
while not stop.exists():
    try:
        with load(engine, threads=1) as runner:
            runner.infer({"input": x})
        reads += 1
    except Exception as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
print(f"{reads} loads, {len(failures)} failed", *failures[:1], sep="\\n", file=sys.stderr)
sys.exit(1 if failures or not reads else 0)
"""


@dataclass(frozen=True)
class TrainedModel:
    """A lenet trained on digits by the real trainer, and its verified ONNX export."""

    checkpoint: Path
    onnx: Path
    test_accuracy: float


@pytest.fixture(scope="session")
def trained_lenet(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """Trained once per test session in-process (single process, ~5 s on one core): >90% on digits."""
    import torch

    from trtopt.export import export_onnx
    from trtopt.train import TrainConfig, train

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("trained_lenet")
    result = train(TrainConfig(model="lenet", dataset="digits", out=str(out), epochs=3, batch_size=32, lr=0.05,
                               seed=0, threads=1))
    exported = export_onnx(result.checkpoint, out / "lenet.onnx")
    return TrainedModel(
        checkpoint=Path(result.checkpoint), onnx=Path(exported.path), test_accuracy=result.test_accuracy
    )
