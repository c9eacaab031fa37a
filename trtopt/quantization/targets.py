"""Which activation tensors to calibrate: everything a Q/DQ pass may read, a superset by design.

TensorRT's placement rules (and ONNX Runtime's QDQ node units) quantize the data inputs of
weighted ops (Conv, ConvTranspose, Gemm, MatMul, and a MatMul's right operand when it is not
constant), all inputs of the ops that run in INT8 next to them (Add, Sub, Mul, Concat, pooling), and
the outputs of weighted ops and their activations (ONNX Runtime needs "DQ -> op -> Q" units). An
output read only by a single Relu/Clip is skipped: both runtimes fuse the activation and quantize
its output, which is a target itself; dropping those also keeps Conv+Relu fusion in the
calibration session. Calibrating a few tensors too many costs one histogram each; missing one
costs a rebuild.
Weights and other constants are never targets: they are quantized per channel from their values.
"""
from __future__ import annotations

import onnx

WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
ALL_INPUT_OPS = frozenset({"Add", "Sub", "Mul", "Concat", "AveragePool", "GlobalAveragePool", "MaxPool"})
OUTPUT_OPS = WEIGHTED_OPS | ALL_INPUT_OPS | frozenset({"Relu", "Clip"})
FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                         onnx.TensorProto.DOUBLE})


def _constants(graph: onnx.GraphProto) -> set[str]:
    """Initializers and Constant outputs, plus anything computed from constants only."""
    constant = {init.name for init in graph.initializer}
    constant |= {init.values.name for init in graph.sparse_initializer}
    for node in graph.node:  # graph.node is topologically sorted in a valid model
        inputs = [name for name in node.input if name]
        if node.op_type == "Constant" or (inputs and all(name in constant for name in inputs)):
            constant.update(name for name in node.output if name)
    return constant


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type per tensor name, from the graph and from shape inference where it succeeds."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inference is a best effort; untyped tensors are checked at run time
        inferred = model
    graph = inferred.graph
    types = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    return types


def calibration_targets(model: onnx.ModelProto, all_tensors: bool = False) -> list[str]:
    """Activation tensors to calibrate, in graph order (graph inputs first), without duplicates.

    With ``all_tensors`` every floating-point activation (graph inputs and node outputs) is a target.
    Tensors whose type is known and not floating point are left out.
    """
    graph = model.graph
    constants = _constants(graph)
    types = tensor_types(model)
    ordered: dict[str, None] = {}

    def add(name: str) -> None:
        if name and name not in constants and types.get(name, onnx.TensorProto.FLOAT) in FLOAT_TYPES:
            ordered.setdefault(name, None)

    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    graph_outputs = {info.name for info in graph.output}

    def fused_away(name: str) -> bool:
        return name not in graph_outputs and consumers.get(name, []) in (["Relu"], ["Clip"])

    for info in graph.input:
        add(info.name)
    for node in graph.node:
        if all_tensors:
            for name in node.output:
                add(name)
            continue
        if node.op_type in WEIGHTED_OPS:
            add(node.input[0])
            if node.op_type == "MatMul" and len(node.input) > 1:
                add(node.input[1])
            if node.op_type == "Gemm" and len(node.input) > 1:
                add(node.input[1])
        elif node.op_type in ALL_INPUT_OPS:
            for name in node.input:
                add(name)
        if node.op_type in OUTPUT_OPS:
            for name in node.output:
                if not fused_away(name):
                    add(name)
    return list(ordered)
