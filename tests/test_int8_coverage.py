"""INT8 coverage: an INT8 build says how much of the model it quantized, and warns when that is little."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

from trtopt.quantization.coverage import FloatChoices, int8_coverage
from trtopt.quantization.qdq import quantize


def _branch(name: str, weight: np.ndarray) -> onnx.GraphProto:
    """An If branch: MatMul of the outer input by its own weight, then Relu (the compute lives here)."""
    return helper.make_graph(
        [helper.make_node("MatMul", ["x", f"{name}.w"], [f"{name}.mm"], name=f"{name}_matmul"),
         helper.make_node("Relu", [f"{name}.mm"], [f"{name}.out"], name=f"{name}_relu")],
        name, [], [helper.make_tensor_value_info(f"{name}.out", TensorProto.FLOAT, [1, 16])],
        initializer=[numpy_helper.from_array(weight, f"{name}.w")])


def make_if_model(path: Path) -> Path:
    """y = If(sum(x) > 0, relu(x @ A), relu(x @ B)) @ C: two layers in subgraphs, one in the main graph."""
    rng = np.random.default_rng(0)
    weights = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in
               [("then", (8, 16)), ("else", (8, 16)), ("head.w", (16, 4))]}
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["total"], name="total", keepdims=0),
        helper.make_node("Greater", ["total", "zero"], ["positive"], name="positive"),
        helper.make_node("If", ["positive"], ["branch"], name="select",
                         then_branch=_branch("then", weights["then"]), else_branch=_branch("else", weights["else"])),
        helper.make_node("MatMul", ["branch", "head.w"], ["y"], name="head"),
    ]
    graph = helper.make_graph(nodes, "if_model", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              initializer=[numpy_helper.from_array(np.float32(0), "zero"),
                                           numpy_helper.from_array(weights["head.w"], "head.w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_layers_inside_if_subgraphs_are_counted_float_with_their_reason(tmp_path):
    model = make_if_model(tmp_path / "if.onnx")
    result = quantize(model, {"branch": 3.0, "x": 2.0}, tmp_path / "q.onnx")
    coverage = int8_coverage(onnx.load(result.path))
    assert (coverage.weighted_layers, coverage.quantized_layers) == (3, 1)
    assert coverage.float_layers == {name: "inside If subgraph of node 'select'" for name in
                                     ("then_matmul", "else_matmul")}
    assert 0 < coverage.quantized_weight_share < 0.5  # head.w is 64 of the 320 weight values
    assert "cannot be calibrated" in coverage.warning()


def test_chosen_float_layers_keep_their_reason_and_a_mostly_int8_model_has_no_warning(residual_convnet, tmp_path):
    result = quantize(residual_convnet, {name: 4.0 for name in ("input", "r0", "r1", "sum", "r2", "mp", "gap", "flat")},
                      tmp_path / "q.onnx", exclude_nodes=["conv1"])
    coverage = int8_coverage(onnx.load(result.path),
                             FloatChoices(nodes={"conv1": "excluded by --exclude-nodes"}))
    assert coverage.quantized_layers == 3 and coverage.float_layers == {"conv1": "excluded by --exclude-nodes"}
    assert coverage.warning() is None
    everything = int8_coverage(onnx.load(residual_convnet), FloatChoices(op_types=("Conv", "Gemm")))
    assert everything.quantized_layers == 0 and set(everything.float_layers.values()) == {
        "excluded by --exclude-op-types"}
    assert everything.warning().startswith("INT8 covers little of the model: 0 of 4 weighted layers")


def test_unnamed_float_layers_are_each_counted(residual_convnet):
    model = onnx.load(residual_convnet)
    for node in model.graph.node:
        node.name = ""
    coverage = int8_coverage(model)
    assert (coverage.weighted_layers, coverage.quantized_layers, len(coverage.float_layers)) == (4, 0, 4)


def test_int8_build_of_a_model_with_its_compute_in_subgraphs_warns_and_records_coverage(tmp_path):
    model = make_if_model(tmp_path / "if.onnx")
    engines = tmp_path / "engines"
    proc = run_cli("build", model, "--int8", "--calib-data", "random", "--calib-samples", "16",
                   "--accuracy-samples", "8", "--engines-dir", engines, "--threads", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    assert f"{model}: INT8 covers little of the model: 1 of 3 weighted layers quantized" in proc.stderr
    coverage = json.loads(proc.stdout)["manifest"]["model"]["int8_coverage"]
    assert coverage["quantized_layers"] == 1 and coverage["float_layers"]["then_matmul"].startswith("inside If")


def test_int8_build_of_a_plain_model_reports_full_coverage_without_warning(residual_convnet, tmp_path):
    proc = run_cli("build", residual_convnet, "--int8", "--calib-data", "random", "--calib-samples", "16",
                   "--accuracy-samples", "8", "--engines-dir", tmp_path / "engines", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert "INT8 coverage: 4 of 4 weighted layers quantized (100% of their weight parameters)" in proc.stdout
    assert "covers little" not in proc.stderr
