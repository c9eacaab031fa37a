"""Shared helpers for the bench tests: real ONNX models of chosen cost and the CLI in a subprocess."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from conftest import run_cli

REPO = Path(__file__).resolve().parents[1]


def make_conv_stack(path: Path, width: int, depth: int, channels: int = 3, size: int = 16, classes: int = 10) -> Path:
    """Input "input" [batch, channels, size, size] -> `depth` 3x3 convs of `width` -> logits [batch, classes].

    Same I/O as tests/conftest.make_residual_convnet, so a wider/deeper stack is the same target made
    slower for real.
    """
    rng = np.random.default_rng(0)
    inits, nodes, previous, cin = [], [], "input", channels
    for i in range(depth):
        inits += [numpy_helper.from_array((rng.standard_normal((width, cin, 3, 3)) * 0.1).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(width, np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [previous, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        previous, cin = f"r{i}", width
    inits += [
        numpy_helper.from_array((rng.standard_normal((classes, width)) * 0.1).astype(np.float32), "fc.w"),
        numpy_helper.from_array(np.zeros(classes, np.float32), "fc.b"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", [previous], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_stack",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def trtopt_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=REPO, timeout=timeout)


def read_report(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


# Short measurements: a second or less per target keeps every bench test file well under a minute.
FAST = ["--threads", "1", "--warmUp", "50", "--max-time", "0.4", "--samples", "32"]
