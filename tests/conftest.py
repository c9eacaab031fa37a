"""Shared test fixtures: small real ONNX models built in the test run (no downloads)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

os.environ.setdefault("TRTOPT_NO_PROGRESS", "1")


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


from dataclasses import dataclass  # noqa: E402  (appended section: trained model fixtures)


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
