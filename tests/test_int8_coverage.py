"""INT8 coverage: an INT8 build says how much of the model's compute it quantized, and warns when little or none.

Real CLI subprocesses on small real models: one whose Conv/MatMul layers all sit inside both branches
of an If (placement works on the main graph only: nothing is quantized), and the residual convnet
(everything quantized; then most of it excluded by op type)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

BUILD = ("--calib-data", "random", "--calib-samples", "16", "--accuracy-samples", "8", "--threads", "1",
         "--backend", "onnxruntime")


def make_if_model(path: Path) -> Path:
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
    graph = helper.make_graph(nodes, "if_model", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                 ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
                              initializer=[numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_int8_build_of_a_model_inside_if_branches_warns_that_nothing_is_quantized(tmp_path):
    model = make_if_model(tmp_path / "switch.onnx")
    built = run_cli("build", model, "--int8", *BUILD, "--engines-dir", tmp_path / "engines", "--json")
    assert built.returncode == 0, built.stderr  # the engine is correct (float): a warning, not a failure
    coverage = json.loads(built.stdout)["manifest"]["int8_coverage"]
    assert coverage["layers"] == 4 and coverage["quantized_layers"] == 0  # Conv + MatMul in both branches
    assert coverage["macs_share"] == 0.0 and coverage["macs_per_sample"] > 0  # the taken branch ran: its MACs
    assert {layer["reason"] for layer in coverage["float_layers"]} == {"inside If subgraph of node switch"}
    ran = [layer for layer in coverage["float_layers"] if layer["macs_per_sample"] > 0]
    assert len(ran) == 2 and len({layer["node"].split("_")[0] for layer in ran}) == 1  # one branch, not both
    assert 8 * 64 * 27 in {layer["macs_per_sample"] for layer in ran}  # its Conv: 8x8x8 outputs, 3x3x3 fan-in
    warnings = [line for line in built.stderr.splitlines() if line.startswith("WARNING: ")]
    assert len(warnings) == 1 and str(model) in warnings[0] and "covers 0.0% of the compute" in warnings[0]
    assert "inside If subgraph of node switch" in warnings[0] and warnings[0] == f"WARNING: {coverage['warning']}"
    again = run_cli("build", model, "--int8", *BUILD, "--engines-dir", tmp_path / "engines")  # a cache hit
    assert again.returncode == 0 and "cache hit" in again.stdout, again.stderr
    assert "int8 (mostly float: see the WARNING)" in again.stdout and coverage["summary"] in again.stdout
    assert f"WARNING: {coverage['warning']}" in again.stderr.splitlines()


def test_int8_build_of_a_plain_model_covers_its_compute_and_names_what_exclusions_leave_float(residual_convnet,
                                                                                              tmp_path):
    engines = tmp_path / "engines"
    full = run_cli("build", residual_convnet, "--int8", *BUILD, "--engines-dir", engines)
    assert full.returncode == 0, full.stderr
    assert "INT8 covers 100.0% of the compute (4 of 4 weighted layers quantized)\n" in full.stdout
    assert "INT8 covers" not in full.stderr  # no coverage warning
    no_conv = run_cli("build", residual_convnet, "--int8", *BUILD, "--engines-dir", engines, "--name", "no-conv",
                      "--exclude-op-types", "Conv", "--json")
    assert no_conv.returncode == 0, no_conv.stderr
    coverage = json.loads(no_conv.stdout)["manifest"]["int8_coverage"]
    assert coverage["quantized_layers"] == 1 and 0 < coverage["macs_share"] < 0.01  # the Gemm alone
    assert coverage["float_reasons"] == [{"reason": "Conv excluded by --exclude-op-types", "layers": 3,
                                          "macs_per_sample": coverage["macs_per_sample"]
                                          - coverage["quantized_macs_per_sample"]}]
    assert "WARNING: " in no_conv.stderr and "Conv excluded by --exclude-op-types" in no_conv.stderr
