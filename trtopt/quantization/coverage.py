"""How much of a Q/DQ model runs in INT8: its weighted layers, which are quantized, and why the rest are not.

An INT8 build can succeed and still quantize nothing: Silero VAD keeps all of its compute inside
``If`` subgraphs, which calibration cannot see into (ONNX Runtime exposes only main-graph values as
outputs), so its "INT8 engine" runs entirely in float. Users who asked for ``--int8`` must learn
that, and why, from the build itself rather than from a benchmark later.

Coverage counts the weighted layers (``placement.WEIGHTED_OPS``, where INT8 buys speed, and the
recurrent LSTM/GRU/RNN, which no Q/DQ rule quantizes), in the main graph and in every subgraph. A
layer counts as quantized when its data and weight inputs are both read through a DequantizeLinear:
a layer with only its weight dequantized still computes in float. Layers left float get one reason
each. Two shares say how much of the model that is:

- of the *compute*, when the caller measured each layer's multiply-accumulates (the build does, on
  one batch of its data, ``trtopt.int8_eval.measured_macs``: a branch not taken costs nothing, a loop
  body counts once per iteration). This is what INT8 speeds up, so it decides the warning;
- of the *weight parameters*, always: a proxy that needs no data or shapes (``trtopt quantize``).

Low coverage (under :data:`LOW_COVERAGE` of the compute, or of the layers where no compute was
measured; none at all included) is a warning, not a failed build: the engine is correct, only not
faster. TensorRT users expect that: trtexec ``--int8`` and Polygraphy build INT8-enabled networks
with float fallback where layers have no INT8 form and say so in the log. Scripts (``--json``
consumers, corpus sweeps) read ``model.int8_coverage`` in the manifest, warning included, instead of
telling a failed build from a mostly-float one by parsing an error line.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import onnx

from trtopt.quantization.modelio import all_graphs, subgraphs
from trtopt.quantization.placement import WEIGHTED_OPS
from trtopt.settings import QdqSettings

RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})  # weighted, but no Q/DQ rule quantizes them
COVERED_OPS = WEIGHTED_OPS | RECURRENT_OPS
# below this share of the compute (of the weighted layers, where no compute was measured) in INT8, the
# build warns: most of the model runs float
LOW_COVERAGE = 0.5
NO_SCALE = "no calibrated scale for its input"
NOT_PLACED = "not quantized by the placement rules"
NO_RULE = "no Q/DQ rule for its op type"


def node_key(node: onnx.NodeProto) -> str:
    """How coverage and MAC counts name a node: its name, else its first output (unique in a valid model),
    so unnamed layers are each counted and still identifiable."""
    return node.name or (node.output[0] if node.output else f"<unnamed {node.op_type}>")


@dataclass(frozen=True)
class Coverage:
    """Weighted layers of an INT8 model: how many are quantized, and each float one with its reason."""

    weighted_layers: int
    quantized_layers: int
    quantized_weight_share: float  # share of the weighted layers' weight parameters in quantized layers
    float_layers: dict[str, str] = field(default_factory=dict)  # node key -> why it is float
    macs_per_sample: float | None = None  # of all weighted layers, measured; None: not measured
    quantized_macs_per_sample: float | None = None

    @property
    def layer_share(self) -> float:
        return self.quantized_layers / self.weighted_layers if self.weighted_layers else 0.0

    @property
    def compute_share(self) -> float | None:
        """Quantized share of the measured MACs; None when not measured or no weighted layer ran."""
        if not self.macs_per_sample or self.quantized_macs_per_sample is None:
            return None
        return self.quantized_macs_per_sample / self.macs_per_sample

    def reasons(self) -> list[tuple[str, int]]:
        """(reason, number of layers), most frequent first."""
        return Counter(self.float_layers.values()).most_common()

    def summary(self) -> str:
        """One line: 'q of n weighted layers quantized (c% of the compute, p% of their weight parameters);
        float: k reason, ...'."""
        if not self.weighted_layers:
            return f"no weighted layer ({', '.join(sorted(COVERED_OPS))}): nothing INT8 can speed up"
        compute = self.compute_share
        shares = ([] if compute is None else [f"{100 * compute:.1f}% of the compute"]) + [
            f"{100 * self.quantized_weight_share:.0f}% of their weight parameters"]
        line = f"{self.quantized_layers} of {self.weighted_layers} weighted layers quantized ({', '.join(shares)})"
        if self.float_layers:
            line += "; float: " + ", ".join(f"{count} {reason}" for reason, count in self.reasons())
        return line

    def warning(self) -> str | None:
        """Why most of the model runs float despite --int8, or None when most of it is INT8."""
        share = self.layer_share if self.compute_share is None else self.compute_share
        if self.weighted_layers and self.quantized_layers and share >= LOW_COVERAGE:
            return None
        hint = ("; values inside If/Loop/Scan subgraphs cannot be calibrated (ONNX Runtime exposes only "
                "main-graph values)" if any(reason.startswith("inside ") for reason in self.float_layers.values())
                else "")
        return f"INT8 covers little of the model: {self.summary()}{hint}"

    def to_json(self) -> dict[str, Any]:
        compute = self.compute_share
        return {"weighted_layers": self.weighted_layers, "quantized_layers": self.quantized_layers,
                "quantized_weight_share": round(self.quantized_weight_share, 4),
                "compute_share": None if compute is None else round(compute, 4),
                "macs_per_sample": self.macs_per_sample, "quantized_macs_per_sample": self.quantized_macs_per_sample,
                "float_layers": dict(self.float_layers), "summary": self.summary(), "warning": self.warning()}


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


def int8_coverage(model: onnx.ModelProto, choices: FloatChoices = FloatChoices(),
                  macs: Mapping[str, float] | None = None) -> Coverage:
    """Coverage of the Q/DQ ``model``; ``choices`` give the reasons of the layers kept float on purpose,
    ``macs`` (per sample, by :func:`node_key`, measured on the float model whose weighted nodes keep
    their names in the Q/DQ copy) the compute of each layer that ran."""
    graphs = list(all_graphs(model.graph))
    sizes = {init.name: math.prod(init.dims) for graph in graphs for init in graph.initializer}
    sizes.update({node.output[0]: math.prod(attr.t.dims) for graph in graphs for node in graph.node
                  if node.op_type == "Constant" for attr in node.attribute if attr.name == "value"})
    # a DequantizeLinear output stands for its quantized input (a weight, or a Q of an activation)
    dequantized = {node.output[0]: node.input[0] for graph in graphs for node in graph.node
                   if node.op_type == "DequantizeLinear"}
    total_size = quantized_size = quantized = weighted = 0
    total_macs = quantized_macs = 0.0
    float_layers: dict[str, str] = {}
    for node, enclosing in _weighted_nodes(model.graph):
        weighted += 1
        size = sum(sizes.get(dequantized.get(name, name), 0) for name in node.input)
        layer_macs = (macs or {}).get(node_key(node), 0.0)
        total_size += size
        total_macs += layer_macs
        if node.op_type in WEIGHTED_OPS and all(name in dequantized for name in node.input[:2] if name):
            quantized += 1
            quantized_size += size
            quantized_macs += layer_macs
        else:
            float_layers[node_key(node)] = _float_reason(node, enclosing, choices)
    share = quantized_size / total_size if total_size else 0.0
    measured = macs is not None
    return Coverage(weighted, quantized, share, float_layers, total_macs if measured else None,
                    quantized_macs if measured else None)


def _float_reason(node: onnx.NodeProto, enclosing: onnx.NodeProto | None, choices: FloatChoices) -> str:
    if enclosing is not None:
        return f"inside {enclosing.op_type} subgraph of node {node_key(enclosing)!r}"
    if node.name in choices.nodes:
        return choices.nodes[node.name]
    if node.op_type in choices.op_types:
        return "excluded by --exclude-op-types"
    if node.op_type in RECURRENT_OPS:
        return NO_RULE
    return NO_SCALE if any(name in choices.missing_scales for name in node.input) else NOT_PLACED


def _weighted_nodes(graph: onnx.GraphProto,
                    enclosing: onnx.NodeProto | None = None) -> Iterator[tuple[onnx.NodeProto, onnx.NodeProto | None]]:
    """Every weighted node, with the outermost control-flow node whose subgraph holds it (None: main graph)."""
    for node in graph.node:
        if node.op_type in COVERED_OPS:
            yield node, enclosing
        for subgraph in subgraphs(node):
            yield from _weighted_nodes(subgraph, enclosing or node)
