"""Where Q/DQ pairs go: TensorRT's placement rules, plus what ONNX Runtime needs to fuse.

Misplaced Q/DQ is the usual reason an INT8 engine is no faster than FP16 (unfused reformat layers)
or loses accuracy, so placement is conservative and rule-based. The rules, in order:

1. **Weighted ops** (Conv, ConvTranspose, Gemm, MatMul): quantize their data input and their weight.
   Weights are constant, quantized per output channel (``weight_axis``); a MatMul whose right operand
   is not constant is quantized on both inputs as activations.
2. **No Q/DQ on outputs of weighted ops** for TensorRT: it fuses bias, BatchNorm and ReLU into the
   kernel and quantizes the output itself when the next op reads INT8.
3. **Residual Add** (an Add with an input produced by a weighted op): that input (the first such
   one, the main branch) stays float so TensorRT fuses the Add into the conv epilogue; every other
   input (the skip branch) gets Q/DQ, even when it is itself a conv output (a downsampling
   shortcut). This is the one exception to rule 2.
4. **Non-weighted ops fed INT8** (Add, Concat, AveragePool, GlobalAveragePool): when one input
   already reads a DQ, all inputs get Q/DQ, so the op runs in INT8 instead of forcing a reformat.
5. **MaxPool and data-movement ops commute** with Q/DQ: they get none of their own. Their output
   shares its input's amax when the calibration has none for it.
6. ``onnxruntime-cpu`` only: ONNX Runtime fuses only complete "DQ -> op -> Q" units, so outputs of
   quantized ops (looking through a single Relu/Clip/data-movement consumer, which ONNX Runtime
   removes or runs in uint8) are quantized as well, and residual Adds take Q/DQ on every input.

7. **Softmax and LayerNormalization read float**: no DQ feeds Softmax/LogSoftmax (both runtimes run
   it in float anyway) or LayerNormalization. An attention mask adds -1e4 to scores of ~10:
   quantizing that sum with one scale zeroes the scores. LayerNormalization reads the residual
   stream of a transformer, where a few outlier channels are far larger than the rest: one scale
   sized for the outliers rounds the other channels to a handful of levels, and every later layer
   reads the normalized result of that rounding.

Q/DQ goes into the main graph only: nodes inside If/Loop/Scan bodies read float values, also where
they read a main-graph tensor that is quantized for its main-graph consumers (calibration cannot
see into bodies; ``coverage`` reports their layers as float).

Excluded nodes (by name or op type) keep every input and their weights in float. A tensor is only
quantized when the calibration has an amax for it (directly or through rule 5);
``targets.calibration_targets`` lists exactly the tensors these rules read.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import onnx_ir as ir

from trtopt.errors import UsageError
from trtopt.quantization.encodings import Encoding

WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
INT8_FED_OPS = frozenset({"Add", "Concat", "AveragePool", "GlobalAveragePool"})
# ops whose output values are a subset/rearrangement of their input values: amax carries over
COMMUTING_OPS = frozenset({"MaxPool", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity"})
# ops whose input must stay float (rule 7): attention scores carry a -1e4 mask next to values of ~10,
# residual streams a few outlier channels next to small ones; one INT8 scale for both loses the small
FLOAT_INPUT_OPS = frozenset({"Softmax", "LogSoftmax", "LayerNormalization"})
# ops ONNX Runtime folds into the preceding quantized op when the Q after them clips the same range
ACTIVATION_OPS = frozenset({"Relu", "Clip"})


@dataclass
class WeightPlan:
    """Quantize the constant input `input_index` of `node` along `axis` (None: per tensor)."""

    node: ir.Node
    input_index: int
    axis: int | None


@dataclass
class Placement:
    """The result of the rules: which edges read a DQ, which weights are quantized, with what amax."""

    # tensor name -> [(consumer node, input index)] that read the dequantized value
    activations: dict[str, list[tuple[ir.Node, int]]] = field(default_factory=dict)
    amax: dict[str, float] = field(default_factory=dict)
    non_negative: set[str] = field(default_factory=set)
    weights: list[WeightPlan] = field(default_factory=list)
    skipped_no_scale: list[str] = field(default_factory=list)  # wanted, but the calibration lacks it
    shared: dict[str, str] = field(default_factory=dict)  # rule 5: tensor -> the one whose Q/DQ it repeats


def is_constant(value: ir.Value | None) -> bool:
    return value is not None and value.const_value is not None


def weight_axis(node: ir.Node, weight: ir.Value, per_channel: bool) -> int | None:
    """The output-channel axis of a weight: Conv 0, ConvTranspose 1, Gemm transB ? 0 : 1, MatMul last."""
    if not per_channel:
        return None
    rank = len(weight.const_value.shape)  # type: ignore[union-attr]
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        group = node.attributes.get_int("group", 1)
        return 1 if group == 1 else None  # [C_in, C_out/group, ...]: channels are not one axis when grouped
    if node.op_type == "Gemm":
        return 0 if node.attributes.get_int("transB", 0) else 1
    if node.op_type == "MatMul":
        return rank - 1 if rank >= 2 else None
    return None


def _weight_input(node: ir.Node) -> int | None:
    """Index of the constant weight input of a weighted op, or None (activation x activation)."""
    if node.op_type in WEIGHTED_OPS and len(node.inputs) > 1 and is_constant(node.inputs[1]):
        return 1
    return None


def _is_non_negative(value: ir.Value, known: set[str]) -> bool:
    producer = value.producer()
    if producer is None:
        return False
    if producer.op_type == "Relu":
        return True
    if producer.op_type == "Clip":
        low = producer.inputs[1] if len(producer.inputs) > 1 else None
        if is_constant(low):
            return float(low.const_value.numpy()) >= 0.0  # type: ignore[union-attr]
        minimum = producer.attributes.get_float("min", None)
        return minimum is not None and minimum >= 0.0
    if producer.op_type == "Concat":
        return all(v is not None and v.name in known for v in producer.inputs)
    if producer.op_type in COMMUTING_OPS | {"AveragePool", "GlobalAveragePool"}:
        return producer.inputs[0] is not None and producer.inputs[0].name in known
    return False


def _propagate_amax(graph: ir.Graph, amax: Mapping[str, float]) -> dict[str, float]:
    """Give tensors next to commuting ops the amax of their neighbour (rule 5)."""
    result = {k: float(v) for k, v in amax.items()}
    for _ in range(2):  # forward then backward pass settle chains like GAP -> Flatten -> Gemm
        for node in graph:
            if node.op_type not in COMMUTING_OPS or not node.inputs or node.inputs[0] is None:
                continue
            src, dst = node.inputs[0].name, node.outputs[0].name
            if src in result and dst not in result:
                result[dst] = result[src]
            elif dst in result and src not in result and node.op_type != "MaxPool":
                result[src] = result[dst]
    return result


def _validate_exclusions(
    graph: ir.Graph, exclude_nodes: Iterable[str], exclude_op_types: Iterable[str]
) -> tuple[set[str], set[str]]:
    names = {node.name for node in graph}
    nodes, ops = set(exclude_nodes), set(exclude_op_types)
    unknown = sorted(nodes - names)
    if unknown:
        raise UsageError(
            f"--exclude-nodes: no node named {unknown} in the model (node names look like {sorted(names)[:5]})"
        )
    op_types = {node.op_type for node in graph}
    unknown_ops = sorted(ops - op_types)
    if unknown_ops:
        raise UsageError(f"--exclude-op-types: the model has no {unknown_ops} nodes (it has {sorted(op_types)})")
    return nodes, ops


def plan_placement(model: ir.Model, amax: Mapping[str, float], encoding: Encoding, *, per_channel: bool = True,
                   exclude_nodes: Iterable[str] = (), exclude_op_types: Iterable[str] = (),
                   observed_non_negative: Iterable[str] = ()) -> Placement:
    """Apply the module's rules to `model` (read only) and return the Q/DQ plan.

    A tensor counts as non-negative (unsigned range for uint8 encodings) when the graph proves it
    (Relu, Clip(min >= 0), pools of those) or when calibration never saw a negative value in it
    (`observed_non_negative`, e.g. an image input in [0, 1]).
    """
    graph = model.graph
    excluded_names, excluded_ops = _validate_exclusions(graph, exclude_nodes, exclude_op_types)

    def excluded(node: ir.Node) -> bool:
        return node.name in excluded_names or node.op_type in excluded_ops

    amax_all = _propagate_amax(graph, amax)
    placement = Placement()
    wanted: dict[str, dict[tuple[int, int], tuple[ir.Node, int]]] = {}
    graph_outputs = {v.name for v in graph.outputs}

    def want(node: ir.Node, index: int) -> None:
        value = node.inputs[index]
        if value is None or is_constant(value) or value.name in graph_outputs or node.op_type in FLOAT_INPUT_OPS:
            return
        if node.graph is not graph:  # a main-graph value read inside an If/Loop/Scan body: the body reads it float
            return
        if value.name not in amax_all:
            if value.name not in placement.skipped_no_scale:
                placement.skipped_no_scale.append(value.name)
            return
        wanted.setdefault(value.name, {})[(id(node), index)] = (node, index)

    def reads_int8(node: ir.Node) -> bool:
        return any(
            v is not None and v.name in wanted and (id(node), i) in wanted[v.name] for i, v in enumerate(node.inputs)
        )

    def want_output(node: ir.Node) -> None:
        """Rule 6: quantize what a quantized op produces, looking through Relu/Clip/commuting ops."""
        value = node.outputs[0]
        consumers = value.consumers()
        while len(consumers) == 1 and (consumers[0].op_type in ACTIVATION_OPS
                                       or (consumers[0].op_type in COMMUTING_OPS and value.name not in amax_all)):
            value = consumers[0].outputs[0]
            consumers = value.consumers()
        for consumer in consumers:
            if not excluded(consumer):
                for index, inp in enumerate(consumer.inputs):
                    if inp is value:
                        want(consumer, index)

    for node in graph:
        if not excluded(node) and node.op_type in WEIGHTED_OPS and (w_index := _weight_input(node)) is not None:
            placement.weights.append(WeightPlan(node, w_index, weight_axis(node, node.inputs[w_index], per_channel)))

    # Rules 4 and 6 depend on what other rules decided (possibly for later nodes): repeat to a fixpoint.
    previous = -1
    while previous != (size := sum(len(edges) for edges in wanted.values())):
        previous = size
        for node in graph:
            if not excluded(node):
                _apply_rules(node, encoding, want, want_output, reads_int8, lambda name: name in wanted)

    placement.activations = {name: list(edges.values()) for name, edges in wanted.items()}
    placement.amax = {name: amax_all[name] for name in placement.activations}
    for node in graph:  # rule 5: identical Q/DQ on both sides let runtimes drop or swap them
        if node.op_type in COMMUTING_OPS and node.inputs and node.inputs[0] is not None:
            src, dst = node.inputs[0].name, node.outputs[0].name
            if src in placement.amax and dst in placement.amax:
                placement.amax[dst] = placement.amax[src]
                placement.shared[dst] = src
    known_non_negative: set[str] = set(observed_non_negative)
    for node in graph:
        for value in node.outputs:
            if _is_non_negative(value, known_non_negative):
                known_non_negative.add(value.name)
    placement.non_negative = {name for name in placement.activations if name in known_non_negative}
    return placement


def _apply_rules(node: ir.Node, encoding: Encoding, want: Callable[[ir.Node, int], None],
                 want_output: Callable[[ir.Node], None], reads_int8: Callable[[ir.Node], bool],
                 is_quantized: Callable[[str], bool]) -> None:
    """Rules 1, 3, 4 and 6 for one node (weights are planned separately)."""
    op = node.op_type
    if op in WEIGHTED_OPS:
        weight_index = _weight_input(node)
        for index in range(2 if op in ("MatMul", "Gemm") else 1):
            if index != weight_index:
                want(node, index)
    elif op == "Add" and not encoding.quantize_weighted_outputs and (fused := _fused_branch(node)) is not None:
        for index in range(len(node.inputs)):
            if index != fused:
                want(node, index)
    elif op in INT8_FED_OPS and any(v is not None and is_quantized(v.name) for v in node.inputs):
        for index in range(len(node.inputs)):
            want(node, index)
    if encoding.quantize_weighted_outputs and op in WEIGHTED_OPS | INT8_FED_OPS | COMMUTING_OPS and reads_int8(node):
        want_output(node)


def _fused_branch(add: ir.Node) -> int | None:
    """Index of the Add input TensorRT fuses into a weighted op's epilogue (rule 3), if any."""
    for index, value in enumerate(add.inputs):
        producer = value.producer() if value is not None else None
        if producer is not None and producer.op_type in WEIGHTED_OPS and len(value.consumers()) == 1:
            return index
    return None
