"""What an INT8 build really quantized: the share of the model's compute that runs INT8, and why the rest is float.

Asking for INT8 does not make a model INT8. Q/DQ placement works on the main graph only, so a model
whose network sits inside If branches (Silero VAD: everything is inside an If on the sample rate)
comes out with no Q/DQ at all, and still builds, runs and matches FP32 perfectly. Exclusions, the
accuracy-budget search and op types without a Q/DQ rule (LSTM, GRU, RNN) leave layers float too.
The build therefore measures its coverage and says it.

*Coverage* is read from the Q/DQ model the backend builds, whatever rules put the Q/DQ there: a
weighted layer (Conv, ConvTranspose, Gemm, MatMul, LSTM, GRU, RNN) counts as quantized when its data
and weight inputs are read through DequantizeLinear. *Compute* is multiply-accumulates measured on
one batch of the build's data (:func:`trtopt.int8_eval.measured_macs`, the counting the
mixed-precision search uses), so a branch not taken costs nothing and a loop body counts once per
iteration. Every float layer carries one reason, the first that applies: inside a subgraph, excluded
by name, excluded by op type, kept float by the budget search, no Q/DQ rule for its op type, no
calibrated range for its input, else left float by the placement rules.

A build whose INT8 covers less than :data:`LOW_COVERAGE` of the compute (none at all included)
still succeeds (exit 0) with a warning, for three reasons. The engine is correct: it matches FP32,
it is only not faster. TensorRT users expect this: trtexec ``--int8`` and Polygraphy build
engines whose layers lack INT8 implementations in higher precision and say so in the log, not with
a failed build. And scripted users (corpus sweeps, ``--json`` consumers) get the coverage as data
(``int8_coverage`` in the manifest, the warning included) instead of a failure they would have to
tell apart from real ones by parsing an error line.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from trtopt.int8_eval import RECURRENT_OPS, all_nodes, node_key
from trtopt.quantization.placement import WEIGHTED_OPS

COMPUTE_OPS = WEIGHTED_OPS | RECURRENT_OPS
SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan"})
# Under this share of the MACs in INT8, the engine is mostly float: a TensorRT user who asked for INT8
# would not expect that, so the build warns (and says why)
LOW_COVERAGE = 0.5
REASONS_SHOWN = 3  # float-layer reasons named in the warning, most compute first (the manifest lists all)


@dataclass(frozen=True)
class FloatCauses:
    """What the build asked to keep float or could not quantize: the reasons a layer may be float."""

    exclude_nodes: frozenset[str] = frozenset()
    exclude_op_types: frozenset[str] = frozenset()
    kept_by_budget: frozenset[str] = frozenset()  # the accuracy-budget search's float layers
    missing_scales: frozenset[str] = frozenset()  # tensors placement wanted but the calibration lacks


@dataclass(frozen=True)
class LayerCoverage:
    node: str
    op_type: str
    macs: float  # per sample, on the measured batch (0: did not run there)
    reason: str | None  # why it is float; None: quantized


@dataclass
class Coverage:
    """Every weighted layer of a Q/DQ model (subgraphs included): quantized or not, and its compute."""

    layers: list[LayerCoverage]

    @property
    def quantized(self) -> list[LayerCoverage]:
        return [layer for layer in self.layers if layer.reason is None]

    @property
    def total_macs(self) -> float:
        return sum(layer.macs for layer in self.layers)

    @property
    def share(self) -> float | None:
        """Quantized share of the weighted layers' MACs; None when none of them ran."""
        total = self.total_macs
        return sum(layer.macs for layer in self.quantized) / total if total else None

    def reasons(self) -> list[tuple[str, int, float]]:
        """(reason, float layers, their MACs) per reason, most MACs first."""
        grouped: dict[str, tuple[int, float]] = {}
        for layer in self.layers:
            if layer.reason is not None:
                count, macs = grouped.get(layer.reason, (0, 0.0))
                grouped[layer.reason] = (count + 1, macs + layer.macs)
        return sorted(((reason, count, macs) for reason, (count, macs) in grouped.items()), key=lambda r: -r[2])

    def summary(self) -> str:
        """One line: the share of the compute, the layer counts, and why the rest is float."""
        share = "n/a (no weighted layer ran)" if self.share is None else f"{100 * self.share:.1f}%"
        line = (f"INT8 covers {share} of the compute ({len(self.quantized)} of {len(self.layers)} weighted layers "
                "quantized)")
        reasons = self.reasons()
        if not reasons:
            return line
        total = self.total_macs
        parts = [f"{count} layer(s) {reason}" + (f" ({100 * macs / total:.1f}% of the compute)" if total else "")
                 for reason, count, macs in reasons[:REASONS_SHOWN]]
        if len(reasons) > REASONS_SHOWN:
            parts.append(f"{len(reasons) - REASONS_SHOWN} more reason(s) in the manifest's int8_coverage")
        return f"{line}; float: " + "; ".join(parts)

    def warning(self, model: str) -> str | None:
        """The warning when INT8 covers nothing or under LOW_COVERAGE of the compute, naming the model."""
        if self.quantized and (self.share is None or self.share >= LOW_COVERAGE):
            return None
        if not self.layers:
            return (f"{model}: INT8 covers nothing: the model has no weighted layers "
                    f"({', '.join(sorted(COMPUTE_OPS))}) to quantize; the engine runs in float")
        hint = ("; Q/DQ is placed in the main graph only" if any(r.startswith("inside ") for r, _, _ in self.reasons())
                else "")
        return f"{model}: {self.summary()}{hint}; the engine runs {'mostly' if self.quantized else 'entirely'} in float"

    def to_json(self, model: str) -> dict[str, Any]:
        share = self.share
        return {
            "macs_share": None if share is None else round(share, 6),
            "macs_per_sample": self.total_macs,
            "quantized_macs_per_sample": sum(layer.macs for layer in self.quantized),
            "layers": len(self.layers), "quantized_layers": len(self.quantized),
            "float_reasons": [{"reason": reason, "layers": count, "macs_per_sample": macs}
                              for reason, count, macs in self.reasons()],
            "float_layers": [{"node": layer.node, "op_type": layer.op_type, "macs_per_sample": layer.macs,
                              "reason": layer.reason} for layer in self.layers if layer.reason is not None],
            "measured_on": "MACs of one batch of the accuracy data, per sample",
            "summary": self.summary(),
            "warning": self.warning(model),
        }


def measure_coverage(qdq_model: Path, macs: Mapping[str, float], causes: FloatCauses) -> Coverage:
    """Coverage of the Q/DQ model at ``qdq_model``; ``macs`` per sample by node key (measured on the FP32
    model, whose weighted nodes keep their names in the Q/DQ copy)."""
    graph = onnx.load(str(qdq_model), load_external_data=False).graph
    layers = [LayerCoverage(node_key(node), node.op_type, macs.get(node_key(node), 0.0), reason)
              for node, reason in _weighted_layers(graph, causes)]
    return Coverage(layers)


def _weighted_layers(graph: onnx.GraphProto, causes: FloatCauses) -> list[tuple[onnx.NodeProto, str | None]]:
    """(node, why float or None) for every weighted node, main graph first, then each subgraph's."""
    dequantized = {output for node in graph.node if node.op_type == "DequantizeLinear" for output in node.output}
    found = []
    for node in graph.node:
        if node.op_type in COMPUTE_OPS:
            found.append((node, _float_reason(node, dequantized, causes)))
        if node.op_type in SUBGRAPH_OPS:
            owner = f"inside {node.op_type} subgraph of node {node_key(node)}"
            found += [(inner, owner) for inner in _nested_weighted(node)]
    return found


def _nested_weighted(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    bodies = [body for attribute in node.attribute
              for body in ([attribute.g] if attribute.HasField("g") else attribute.graphs)]
    return [inner for body in bodies for inner in all_nodes(body) if inner.op_type in COMPUTE_OPS]


def _float_reason(node: onnx.NodeProto, dequantized: set[str], causes: FloatCauses) -> str | None:
    """Why a main-graph weighted node is float, or None when its data and weight inputs read a DQ."""
    inputs = [name for name in node.input[:2] if name]
    if node.op_type in WEIGHTED_OPS and inputs and all(name in dequantized for name in inputs):
        return None
    if node.name in causes.exclude_nodes:
        return "excluded by --exclude-nodes"
    if node.op_type in causes.exclude_op_types:
        return f"{node.op_type} excluded by --exclude-op-types"
    if node.name in causes.kept_by_budget:
        return "kept float by the accuracy-budget search"
    if node.op_type not in WEIGHTED_OPS:
        return f"{node.op_type}: no Q/DQ rule quantizes this op type"
    if any(name in causes.missing_scales for name in inputs):
        return "no calibrated range for its input"
    return "left float by the Q/DQ placement rules"
