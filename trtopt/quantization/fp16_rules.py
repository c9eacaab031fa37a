"""Which nodes stay FP32 in a mixed-precision FP16 model: small rule classes, combined by a classifier.

FP16 has a largest finite value of 65504 and ~3 significant decimal digits. A node is kept in FP32
when FP16 would overflow or lose too much there; every rule names its reason, and the reasons go
into the build log and the manifest so a user can see why a node was kept:

* ``ReductionOpRule``: Softmax/LogSoftmax (exp of large logits, sums over a row), normalization
  layers (means and variances of many values) stay FP32, as NVIDIA's AutoCast does.
* ``LargeReductionRule``: Reduce* ops (and global pools) that sum more than ``max_depth`` values:
  an FP16 accumulator of that many terms loses the small ones (unknown sizes count as large).
* ``InitializerRangeRule``: a node reading (or a Constant node holding) a constant with |x| beyond
  ``max_abs`` (overflows FP16) or with most non-zero magnitudes below FP16's normal range (flushes to
  zero).
* ``ActivationRangeRule``: with calibration ranges, a node whose input or output amax exceeds
  ``max_abs``; the default 8192 leaves 8x headroom below 65504 for values the calibration data
  did not reach.
"""
from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

FP16_MAX = float(np.finfo(np.float16).max)  # 65504
FP16_MIN_NORMAL = float(np.finfo(np.float16).tiny)  # 6.1e-5


@dataclass(frozen=True)
class GraphFacts:
    """What rules may look at: constants, calibration ranges and inferred shapes, by tensor name."""

    constants: Mapping[str, np.ndarray]
    amax: Mapping[str, float]
    shapes: Mapping[str, tuple[int | None, ...]]

    @classmethod
    def from_model(cls, model: onnx.ModelProto, amax: Mapping[str, float] | None = None) -> "GraphFacts":
        constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        constants[node.output[0]] = numpy_helper.to_array(attr.t)
        try:
            inferred = onnx.shape_inference.infer_shapes(model).graph
        except Exception:  # noqa: BLE001 - shape inference is a hint only; rules treat unknown shapes conservatively
            inferred = model.graph
        shapes: dict[str, tuple[int | None, ...]] = {}
        for info in [*inferred.value_info, *inferred.input, *inferred.output]:
            dims = info.type.tensor_type.shape.dim
            shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        return cls(constants, dict(amax or {}), shapes)


class Rule(abc.ABC):
    """One reason to keep a node in FP32."""

    @abc.abstractmethod
    def keep_fp32(self, node: onnx.NodeProto, facts: GraphFacts) -> str | None:
        """A one-line reason when `node` must stay FP32, else None."""


class ReductionOpRule(Rule):
    OPS = frozenset({"Softmax", "LogSoftmax", "LayerNormalization", "BatchNormalization", "InstanceNormalization",
                     "GroupNormalization", "LpNormalization", "RMSNormalization", "ReduceLogSumExp", "Exp", "Pow"})

    def keep_fp32(self, node: onnx.NodeProto, facts: GraphFacts) -> str | None:
        return (
            f"{node.op_type} reduces or exponentiates: FP32 as AutoCast keeps it" if node.op_type in self.OPS else None
        )


@dataclass
class LargeReductionRule(Rule):
    max_depth: int = 4096

    def keep_fp32(self, node: onnx.NodeProto, facts: GraphFacts) -> str | None:
        if not (node.op_type.startswith("Reduce") or node.op_type in ("GlobalAveragePool", "GlobalLpPool")):
            return None
        shape = facts.shapes.get(node.input[0]) if node.input else None
        if node.op_type.startswith("Global"):
            depth = int(np.prod(shape[2:])) if shape and all(isinstance(d, int) and d > 0 for d in shape[2:]) else None
        else:
            depth = _reduce_depth(node, shape, facts)
        if depth is None:
            return f"{node.op_type} over an unknown number of values" if node.op_type.startswith("Reduce") else None
        return f"{node.op_type} sums {depth} values (> {self.max_depth})" if depth > self.max_depth else None


def _reduce_depth(node: onnx.NodeProto, shape: tuple[int | None, ...] | None, facts: GraphFacts) -> int | None:
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        return None
    axes: Iterable[int] | None = None
    for attr in node.attribute:
        if attr.name == "axes":
            axes = list(attr.ints)
    if axes is None and len(node.input) > 1 and node.input[1] in facts.constants:
        axes = facts.constants[node.input[1]].reshape(-1).tolist()
    axes = range(len(shape)) if not axes else [a % len(shape) for a in axes]
    return int(np.prod([shape[a] for a in axes]))


@dataclass
class InitializerRangeRule(Rule):
    max_abs: float = FP16_MAX
    tiny_fraction: float = 0.5  # keep FP32 when more than this share of non-zero values would flush

    def keep_fp32(self, node: onnx.NodeProto, facts: GraphFacts) -> str | None:
        # a Constant node is converted on its own: its value (e.g. a BatchNorm variance of 1e8) is judged too
        for name in [*node.input, *(node.output if node.op_type == "Constant" else [])]:
            value = facts.constants.get(name)
            if value is None or value.dtype.kind != "f" or value.size == 0:
                continue
            magnitude = np.abs(value.astype(np.float64))
            if magnitude.max() > self.max_abs:
                return f"constant {name} holds |x| = {magnitude.max():.3g} > {self.max_abs:.0f} (FP16 overflow)"
            nonzero = magnitude[magnitude > 0]
            if nonzero.size and (nonzero < FP16_MIN_NORMAL).mean() > self.tiny_fraction:
                return f"constant {name}: most non-zero values are below FP16's normal range ({FP16_MIN_NORMAL:.2g})"
        return None


@dataclass
class ActivationRangeRule(Rule):
    max_abs: float = 8192.0

    def keep_fp32(self, node: onnx.NodeProto, facts: GraphFacts) -> str | None:
        for name in [*node.input, *node.output]:
            amax = facts.amax.get(name)
            if amax is not None and amax > self.max_abs:
                return f"tensor {name} reaches |x| = {amax:.3g} in calibration (> {self.max_abs:.0f})"
        return None


DEFAULT_RULES: tuple[Rule, ...] = (
    ReductionOpRule(),
    LargeReductionRule(),
    InitializerRangeRule(),
    ActivationRangeRule(),
)


def classify(model: onnx.ModelProto, facts: GraphFacts, rules: Iterable[Rule] = DEFAULT_RULES) -> dict[str, str]:
    """{node name: reason} for every node that stays FP32 (the first rule that fires gives the reason)."""
    rules = tuple(rules)
    kept: dict[str, str] = {}
    for node in model.graph.node:
        for rule in rules:
            reason = rule.keep_fp32(node, facts)
            if reason:
                kept[node.name] = reason
                break
    return kept
