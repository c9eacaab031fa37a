"""INT8 coverage: an INT8 build says how much of the model it quantized, and warns when that is little.

Coverage of hand-quantized models, then real CLI subprocesses on small real models: one whose
Conv/MatMul layers all sit inside both branches of an If (placement works on the main graph only:
nothing is quantized), one with a quantized head after an If, and the residual convnet (everything
quantized; then most of it excluded by op type)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

from trtopt.quantization.coverage import FloatChoices, int8_coverage
from trtopt.quantization.qdq import quantize

BUILD = ("--calib-data", "random", "--calib-samples", "16", "--accuracy-samples", "8", "--threads", "1",
         "--backend", "onnxruntime")


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
    return _save_if_model(path, nodes, [1, 8], [1, 4], [numpy_helper.from_array(weights["head.w"], "head.w")])


def _save_if_model(path: Path, nodes: list[onnx.NodeProto], x_shape: list[object], y_shape: list[object],
                   weights: list[onnx.TensorProto]) -> Path:
    """Save the graph ``x -> nodes -> y`` (with the constant ``zero`` the If conditions compare with), checked."""
    graph = helper.make_graph(nodes, "if_model", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                              initializer=[numpy_helper.from_array(np.float32(0), "zero"), *weights])
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
    proc = run_cli("build", model, "--int8", *BUILD, "--engines-dir", tmp_path / "engines", "--json")
    assert proc.returncode == 0, proc.stderr
    assert f"{model}: INT8 covers little of the model: 1 of 3 weighted layers quantized" in proc.stderr
    coverage = json.loads(proc.stdout)["manifest"]["model"]["int8_coverage"]
    assert coverage["quantized_layers"] == 1 and coverage["float_layers"]["then_matmul"].startswith("inside If")
    # measured MACs: the head (16x4) and the one branch that ran (8x16), not the branch not taken
    assert coverage["macs_per_sample"] == 16 * 4 + 8 * 16 and coverage["compute_share"] == round(64 / 192, 4)


def make_model_inside_if(path: Path) -> Path:
    """x [batch, 3, 8, 8] -> If(mean(x) > 0): Conv -> Relu -> GlobalAveragePool -> Flatten -> MatMul in each
    branch (different weights), like exporters write models with a data-dependent or sample-rate switch."""
    rng = np.random.default_rng(0)

    def branch(tag: str) -> onnx.GraphProto:
        weights = [numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), f"{tag}.{name}")
                   for name, shape in (("conv", (8, 3, 3, 3)), ("fc", (8, 4)))]
        nodes = [
            helper.make_node("Conv", ["x", f"{tag}.conv"], [f"{tag}_c"], name=f"{tag}_conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"{tag}_c"], [f"{tag}_r"], name=f"{tag}_relu"),
            helper.make_node("GlobalAveragePool", [f"{tag}_r"], [f"{tag}_g"], name=f"{tag}_gap"),
            helper.make_node("Flatten", [f"{tag}_g"], [f"{tag}_f"], name=f"{tag}_flatten"),
            helper.make_node("MatMul", [f"{tag}_f", f"{tag}.fc"], [f"{tag}_y"], name=f"{tag}_fc"),
        ]
        return helper.make_graph(nodes, tag, [], [helper.make_tensor_value_info(f"{tag}_y", TensorProto.FLOAT,
                                                                                None)], initializer=weights)

    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], name="mean", keepdims=0),
        helper.make_node("Greater", ["mean", "zero"], ["positive"], name="positive"),
        helper.make_node("If", ["positive"], ["y"], name="switch", then_branch=branch("then"),
                         else_branch=branch("else")),
    ]
    return _save_if_model(path, nodes, ["batch", 3, 8, 8], ["batch", 4], [])


def test_int8_build_of_a_model_inside_if_branches_warns_that_nothing_is_quantized(tmp_path):
    model = make_model_inside_if(tmp_path / "switch.onnx")
    built = run_cli("build", model, "--int8", *BUILD, "--engines-dir", tmp_path / "engines", "--json")
    assert built.returncode == 0, built.stderr  # the engine is correct (float): a warning, not a failure
    coverage = json.loads(built.stdout)["manifest"]["model"]["int8_coverage"]
    assert coverage["weighted_layers"] == 4 and coverage["quantized_layers"] == 0  # Conv + MatMul in both branches
    assert set(coverage["float_layers"].values()) == {"inside If subgraph of node 'switch'"}
    # the compute of the branch that ran: its Conv (8x8x8 outputs, 3x3x3 fan-in) and MatMul (8 -> 4)
    assert coverage["compute_share"] == 0.0 and coverage["macs_per_sample"] == 8 * 64 * 27 + 8 * 4
    warning = f"{model}: INT8 covers little of the model: 0 of 4 weighted layers quantized (0.0% of the compute"
    assert warning in built.stderr and coverage["warning"] in built.stderr
    again = run_cli("build", model, "--int8", *BUILD, "--engines-dir", tmp_path / "engines")  # a cache hit
    assert again.returncode == 0 and "cache hit" in again.stdout, again.stderr
    assert "int8 (mostly float: see the WARNING)" in again.stdout and coverage["summary"] in again.stdout
    assert f"WARNING trtopt.build: {model}: {coverage['warning']}" in again.stderr.splitlines()


def test_int8_build_of_a_plain_model_covers_its_compute_and_names_what_exclusions_leave_float(residual_convnet,
                                                                                              tmp_path):
    engines = tmp_path / "engines"
    full = run_cli("build", residual_convnet, "--int8", *BUILD, "--engines-dir", engines)
    assert full.returncode == 0, full.stderr
    assert ("INT8 coverage: 4 of 4 weighted layers quantized (100.0% of the compute, 100% of their weight "
            "parameters)\n") in full.stdout
    assert "covers little" not in full.stderr and "mostly float" not in full.stdout
    no_conv = run_cli("build", residual_convnet, "--int8", *BUILD, "--engines-dir", engines, "--name", "no-conv",
                      "--exclude-op-types", "Conv", "--json")
    assert no_conv.returncode == 0, no_conv.stderr
    coverage = json.loads(no_conv.stdout)["manifest"]["model"]["int8_coverage"]
    assert coverage["quantized_layers"] == 1 and 0 < coverage["compute_share"] < 0.01  # the Gemm alone
    assert coverage["float_layers"] == dict.fromkeys(["conv0", "conv1", "conv2"], "excluded by --exclude-op-types")
    assert "covers little of the model: 1 of 4 weighted layers quantized" in no_conv.stderr
