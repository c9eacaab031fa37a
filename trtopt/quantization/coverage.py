"""How much of a Q/DQ model runs in INT8: its weighted layers, which are quantized, and why the rest are not.

An INT8 build can succeed and still quantize nothing: Silero VAD keeps all of its compute inside
``If`` subgraphs, which calibration cannot see into (ONNX Runtime exposes only main-graph values as
outputs), so its "INT8 engine" runs entirely in float. Users who asked for ``--int8`` must learn
that, and why, from the build itself rather than from a benchmark later. Coverage counts the
weighted layers (``placement.WEIGHTED_OPS``: where INT8 buys speed), in the main graph and in every
subgraph, and the share of their weight parameters that is quantized: a proxy for compute that
needs no tensor shapes, so it also covers layers inside subgraphs and dynamic-shape models.

A layer counts as quantized when one of its inputs is produced by a DequantizeLinear: its weight,
its data, or both. Layers left float get one reason each. Low coverage is a warning, not a failed
build: the engine is correct, only not faster, just as TensorRT runs INT8-enabled networks with
float fallback; scripts read ``model.int8_coverage`` in the manifest.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import onnx

from trtopt.quantization.modelio import subgraphs
from trtopt.quantization.placement import WEIGHTED_OPS
from trtopt.settings import QdqSettings

# below this share of weighted layers quantized, the build warns: most of the model runs float
LOW_COVERAGE = 0.5
NO_SCALE = "no calibrated scale for its input"
NOT_PLACED = "not quantized by the placement rules"


@dataclass(frozen=True)
class Coverage:
    """Weighted layers of an INT8 model: how many are quantized, and each float one with its reason."""

    weighted_layers: int
    quantized_layers: int
    quantized_weight_share: float  # share of the weighted layers' weight parameters in quantized layers
    float_layers: dict[str, str] = field(default_factory=dict)  # node name -> why it is float

    @property
    def layer_share(self) -> float:
        return self.quantized_layers / self.weighted_layers if self.weighted_layers else 0.0

    def reasons(self) -> list[tuple[str, int]]:
        """(reason, number of layers), most frequent first."""
        return Counter(self.float_layers.values()).most_common()

    def summary(self) -> str:
        """One line: 'q of n weighted layers quantized (p% of weight parameters); float: k reason, ...'."""
        if not self.weighted_layers:
            return "no weighted layer (Conv, ConvTranspose, Gemm, MatMul): nothing INT8 can speed up"
        line = (f"{self.quantized_layers} of {self.weighted_layers} weighted layers quantized "
                f"({100 * self.quantized_weight_share:.0f}% of their weight parameters)")
        if self.float_layers:
            line += "; float: " + ", ".join(f"{count} {reason}" for reason, count in self.reasons())
        return line

    def warning(self) -> str | None:
        """Why most of the model runs float despite --int8, or None when most of it is INT8."""
        if self.weighted_layers and self.layer_share >= LOW_COVERAGE:
            return None
        hint = ("; values inside If/Loop/Scan subgraphs cannot be calibrated (ONNX Runtime exposes only "
                "main-graph values)" if any(reason.startswith("inside ") for reason in self.float_layers.values())
                else "")
        return f"INT8 covers little of the model: {self.summary()}{hint}"

    def to_json(self) -> dict[str, Any]:
        return {"weighted_layers": self.weighted_layers, "quantized_layers": self.quantized_layers,
                "quantized_weight_share": round(self.quantized_weight_share, 4),
                "float_layers": dict(self.float_layers), "summary": self.summary()}


@dataclass(frozen=True)
class FloatChoices:
    """What the build itself kept float, so coverage tells choices from accidents."""

    nodes: Mapping[str, str] = field(default_factory=dict)  # node name -> why (--exclude-nodes, budget search)
    op_types: Collection[str] = ()  # --exclude-op-types
    missing_scales: Collection[str] = ()  # tensors placement wanted quantized, absent from the scale table

    @classmethod
    def of(cls, qdq: QdqSettings, missing_scales: Collection[str], searched: Collection[str] = ()) -> "FloatChoices":
        """The choices of a build or ``trtopt quantize`` run: its exclusions, plus the layers the
        accuracy-budget search kept float (``searched``)."""
        nodes = {name: "kept float by the accuracy-budget search" for name in searched}
        nodes.update({name: "excluded by --exclude-nodes" for name in qdq.exclude_nodes})
        return cls(nodes, qdq.exclude_op_types, missing_scales)


def int8_coverage(model: onnx.ModelProto, choices: FloatChoices = FloatChoices()) -> Coverage:
    """Coverage of the Q/DQ ``model``; ``choices`` give the reasons of the layers kept float on purpose."""
    graphs = list(_graphs(model.graph))
    sizes = {init.name: math.prod(init.dims) for graph in graphs for init in graph.initializer}
    sizes.update({node.output[0]: math.prod(attr.t.dims) for graph in graphs for node in graph.node
                  if node.op_type == "Constant" for attr in node.attribute if attr.name == "value"})
    # a DequantizeLinear output stands for its quantized input (a weight, or a Q of an activation)
    dequantized = {node.output[0]: node.input[0] for graph in graphs for node in graph.node
                   if node.op_type == "DequantizeLinear"}
    total_size = quantized_size = quantized = weighted = 0
    float_layers: dict[str, str] = {}
    for node, enclosing in _weighted_nodes(model.graph):
        weighted += 1
        size = sum(sizes.get(dequantized.get(name, name), 0) for name in node.input)
        total_size += size
        if any(name in dequantized for name in node.input):
            quantized += 1
            quantized_size += size
        else:  # unnamed nodes (allowed by ONNX) get a placeholder, so none hides another
            float_layers[node.name or f"<unnamed {node.op_type} #{weighted}>"] = _float_reason(node, enclosing, choices)
    share = quantized_size / total_size if total_size else 0.0
    return Coverage(weighted, quantized, share, float_layers)


def _float_reason(node: onnx.NodeProto, enclosing: onnx.NodeProto | None, choices: FloatChoices) -> str:
    if enclosing is not None:
        return f"inside {enclosing.op_type} subgraph of node {enclosing.name!r}"
    if node.name in choices.nodes:
        return choices.nodes[node.name]
    if node.op_type in choices.op_types:
        return "excluded by --exclude-op-types"
    return NO_SCALE if any(name in choices.missing_scales for name in node.input) else NOT_PLACED


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph in it, at any depth."""
    yield graph
    for node in graph.node:
        for subgraph in subgraphs(node):
            yield from _graphs(subgraph)


def _weighted_nodes(graph: onnx.GraphProto,
                    enclosing: onnx.NodeProto | None = None) -> Iterator[tuple[onnx.NodeProto, onnx.NodeProto | None]]:
    """Every weighted node, with the outermost control-flow node whose subgraph holds it (None: main graph)."""
    for node in graph.node:
        if node.op_type in WEIGHTED_OPS:
            yield node, enclosing
        for subgraph in subgraphs(node):
            yield from _weighted_nodes(subgraph, enclosing or node)
