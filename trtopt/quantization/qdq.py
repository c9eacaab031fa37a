"""Q/DQ insertion: turn an FP32 ONNX and a scale table into an explicitly quantized INT8 ONNX.

Placement (which tensors get Q/DQ) is decided in placement.py, the integer types per target in
encodings.py; this module only edits the graph (with onnx-ir, not raw protobuf surgery), upgrades
the opset when per-channel scales need it, and writes the result atomically. The output is what
TensorRT builds strongly typed (``tensorrt`` encoding) or what ONNX Runtime fuses into integer
kernels (``onnxruntime-cpu`` encoding).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass

from trtopt.errors import UsageError
from trtopt.quantization.encodings import Encoding, get_encoding, quantize_bias, quantize_weight
from trtopt.quantization.modelio import fold_generated_weights, load_onnx, prepare_model, write_derived_onnx
from trtopt.quantization.placement import Placement, plan_placement

PER_AXIS_OPSET = 13  # DequantizeLinear's `axis` (per-channel scales) arrived in opset 13
_INT32_MAX = float(np.iinfo(np.int32).max)


class ScaleSource(Protocol):
    """What Q/DQ insertion needs from a calibration scale table."""

    tensors: Any

    def amax(self, name: str) -> float: ...


@dataclass
class QuantizeResult:
    """What was quantized, for logs, manifests and tests."""

    path: Path | None
    encoding: str
    activations: list[str]
    weights: list[str]
    excluded_nodes: list[str] = field(default_factory=list)
    missing_scales: list[str] = field(default_factory=list)
    opset: int = 0


def amax_mapping(scales: ScaleSource | Mapping[str, float]) -> dict[str, float]:
    """A plain {tensor: amax} from a ScaleTable or a dict (the dict form keeps tests and scripts simple)."""
    if isinstance(scales, Mapping):
        return {str(k): float(v) for k, v in scales.items()}
    names = scales.tensors.keys() if isinstance(scales.tensors, Mapping) else scales.tensors
    return {name: float(scales.amax(name)) for name in names}


def _upgrade_opset(proto: onnx.ModelProto, minimum: int) -> onnx.ModelProto:
    current = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if current >= minimum:
        return proto
    try:
        return onnx.version_converter.convert_version(proto, minimum)
    except Exception as exc:  # the converter raises bare RuntimeErrors for unsupported ops
        raise UsageError(
            f"cannot upgrade the model from opset {current} to {minimum} for per-channel Q/DQ: {exc}"
        ) from exc


class _Inserter:
    """Adds Q/DQ nodes and quantized initializers to one graph, with unique, readable names."""

    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self.order = {id(node): position for position, node in enumerate(graph)}
        self.names = (
            {v.name for v in graph.initializers.values()}
            | {v.name for n in graph for v in n.outputs}
            | {v.name for v in graph.inputs}
        )

    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def constant(self, base: str, array: np.ndarray) -> ir.Value:
        name = self.unique(base)
        value = ir.Value(
            name=name,
            shape=ir.Shape(array.shape),
            type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
            const_value=ir.Tensor(array, name=name),
        )
        self.graph.register_initializer(value)
        return value

    def dequantize(self, base: str, q: ir.Value, scale: ir.Value, zero_point: ir.Value, axis: int | None,
                   before: ir.Node, like: ir.Value | None) -> ir.Value:
        attrs = [ir.AttrInt64("axis", axis)] if axis is not None else []
        node = ir.Node(
            "", "DequantizeLinear", [q, scale, zero_point], attrs, name=self.unique(f"{base}_DequantizeLinear")
        )
        node.outputs[0].name = self.unique(f"{base}_dq")
        if like is not None:
            node.outputs[0].shape, node.outputs[0].type = like.shape, like.type
        self.graph.insert_before(before, node)
        return node.outputs[0]

    def activation(
        self, value: ir.Value, scale: float, zero_point: int, dtype: type, consumers: Iterable[tuple[ir.Node, int]]
    ) -> None:
        base = value.name or "tensor"
        s = self.constant(f"{base}_scale", np.array(scale, dtype=np.float32))
        z = self.constant(f"{base}_zero_point", np.array(zero_point, dtype=dtype))
        quant = ir.Node("", "QuantizeLinear", [value, s, z], name=self.unique(f"{base}_QuantizeLinear"))
        quant.outputs[0].name = self.unique(f"{base}_q")
        quant.outputs[0].shape = value.shape
        quant.outputs[0].type = ir.TensorType(ir.DataType.from_numpy(np.dtype(dtype)))
        consumers = list(consumers)
        # the first consumer in graph order, from positions taken once: graph.index() walks the node
        # list, which made insertion quadratic (minutes for DenseNet-121)
        anchor = min((node for node, _ in consumers), key=lambda node: self.order[id(node)])
        self.graph.insert_before(anchor, quant)
        dq = self.dequantize(base, quant.outputs[0], s, z, None, anchor, value)
        for node, index in consumers:
            node.replace_input_with(index, dq)


def insert_qdq(
    model: ir.Model,
    scales: ScaleSource | Mapping[str, float],
    encoding: str | Encoding = "onnxruntime-cpu",
    *,
    per_channel: bool = True,
    exclude_nodes: Iterable[str] = (),
    exclude_op_types: Iterable[str] = (),
) -> tuple[Placement, list[str]]:
    """Insert Q/DQ into `model` in place. Returns the placement and the names of quantized weights."""
    enc = get_encoding(encoding)
    amax = amax_mapping(scales)
    stats = getattr(scales, "tensors", None)
    observed = [n for n, t in stats.items() if getattr(t, "non_negative", None)] if isinstance(stats, Mapping) else []
    placement = plan_placement(model, amax, enc, per_channel=per_channel, exclude_nodes=exclude_nodes,
                               exclude_op_types=exclude_op_types, observed_non_negative=observed)
    graph = model.graph
    inserter = _Inserter(graph)
    by_name = {v.name: v for n in graph for v in n.outputs} | {v.name: v for v in graph.inputs}
    act_params = {}
    ranges = _observed_ranges(stats, placement)
    for name, edges in placement.activations.items():
        params = enc.activation_params(placement.amax[name], name in placement.non_negative, ranges.get(name))
        act_params[name] = params
        inserter.activation(by_name[name], params.scale, params.zero_point, params.dtype, edges)

    quantized_weights: list[str] = []
    for plan in placement.weights:
        node, weight = plan.node, plan.node.inputs[plan.input_index]
        bias, x_scale = _integer_bias(node, enc)
        w = weight.const_value.numpy()  # type: ignore[union-attr]
        # a weight channel that is (nearly) zero gets a tiny scale; its bias / (x_scale * w_scale) would then
        # overflow int32 and be clipped: raise that channel's scale until its bias fits (its weights stay ~0)
        floor = None if bias is None else np.abs(bias) * enc.weight_qmax / (x_scale * _INT32_MAX)
        q, w_scale = quantize_weight(w, plan.axis, enc.weight_qmax, min_amax=floor)
        base = weight.name
        qv = inserter.constant(f"{base}_quantized", q)
        sv = inserter.constant(f"{base}_scale", w_scale)
        zv = inserter.constant(f"{base}_zero_point", np.zeros(w_scale.shape, dtype=np.int8))
        node.replace_input_with(plan.input_index, inserter.dequantize(base, qv, sv, zv, plan.axis, node, weight))
        quantized_weights.append(base)
        if bias is not None:
            bias_value = node.inputs[2]
            b_scale = (x_scale * w_scale).astype(np.float32)
            bias_axis = 0 if plan.axis is not None and np.ndim(b_scale) == 1 else None
            bq = inserter.constant(f"{bias_value.name}_quantized", quantize_bias(bias, b_scale))
            bs = inserter.constant(f"{bias_value.name}_scale", b_scale)
            bz = inserter.constant(f"{bias_value.name}_zero_point", np.zeros(b_scale.shape, dtype=np.int32))
            node.replace_input_with(2, inserter.dequantize(bias_value.name, bq, bs, bz, bias_axis, node, bias_value))
    _drop_unused_initializers(graph)
    return placement, quantized_weights


def _observed_ranges(stats: object, placement: Placement) -> dict[str, tuple[float, float]]:
    """[min, max] per quantized tensor from the scale table, where the table recorded them.

    A tensor whose Q/DQ repeats a neighbour's (rule 5) takes that neighbour's range, so both pairs
    stay identical and runtimes can still drop or swap them.
    """
    if not isinstance(stats, Mapping):
        return {}
    recorded = {name: (float(t.min), float(t.max)) for name, t in stats.items()
                if getattr(t, "min", None) is not None and getattr(t, "max", None) is not None}
    ranges = {}
    for name in placement.activations:
        source = name
        while source in placement.shared:  # a chain such as Reshape -> Transpose repeats its first pair
            source = placement.shared[source]
        if source in recorded:
            ranges[name] = recorded[source]
    return ranges


def _integer_bias(node: ir.Node, enc: Encoding) -> tuple[np.ndarray | None, float]:
    """(constant bias, input scale) when the encoding quantizes this node's bias to int32, else (None, 0)."""
    data = node.inputs[0]
    if (
        enc.quantize_bias
        and len(node.inputs) > 2
        and node.inputs[2] is not None
        and node.inputs[2].const_value is not None
        and data is not None
        and data.producer() is not None
        and data.producer().op_type == "DequantizeLinear"
    ):
        return node.inputs[2].const_value.numpy(), float(data.producer().inputs[1].const_value.numpy())  # type: ignore[union-attr]
    return None, 0.0


def _drop_unused_initializers(graph: ir.Graph) -> None:
    """Float weights replaced by int8 copies are no longer read; keeping them would double the file."""
    for name, value in list(graph.initializers.items()):
        if not value.uses() and not value.is_graph_output() and not value.is_graph_input():
            del graph.initializers[name]


def quantize(
    model_path: str | os.PathLike[str],
    scales: ScaleSource | Mapping[str, float],
    output_path: str | os.PathLike[str] | None = None,
    *,
    encoding: str | Encoding = "onnxruntime-cpu",
    per_channel: bool = True,
    exclude_nodes: Iterable[str] = (),
    exclude_op_types: Iterable[str] = (),
    force: bool = False,
) -> QuantizeResult:
    """Write a Q/DQ INT8 ONNX of `model_path` using calibrated `scales`.

    A ScaleTable computed on different model bytes is refused (``ensure_matches``) unless `force`:
    reusing a stale calibration silently is a known failure of other tools.
    """
    source = Path(model_path)
    proto = load_onnx(source)
    if hasattr(scales, "ensure_matches"):
        scales.ensure_matches(source, force=force)  # type: ignore[union-attr]
    enc = get_encoding(encoding)
    proto = _upgrade_opset(fold_generated_weights(prepare_model(proto)), PER_AXIS_OPSET)
    model = ir.from_proto(proto)
    LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=0)(model)
    placement, weights = insert_qdq(model, scales, enc, per_channel=per_channel, exclude_nodes=exclude_nodes,
                                    exclude_op_types=exclude_op_types)
    model.metadata_props["trtopt.qdq_encoding"] = enc.name
    table_id = getattr(scales, "table_id", None)
    if table_id:
        model.metadata_props["trtopt.scale_table_id"] = str(table_id)
    out_proto = ir.to_proto(model)
    result = QuantizeResult(path=None, encoding=enc.name, activations=sorted(placement.activations), weights=weights,
                            excluded_nodes=sorted(set(exclude_nodes)), missing_scales=placement.skipped_no_scale,
                            opset=next(o.version for o in out_proto.opset_import if o.domain in ("", "ai.onnx")))
    if output_path is not None:
        result.path = write_derived_onnx(out_proto, output_path, source)
    return result
