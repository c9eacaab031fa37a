"""FP16 conversion: a mixed-precision ONNX with FP16 initializers and compute, FP32 where it matters.

TensorRT 11 builds the precision the ONNX states (strong typing), so "--fp16" means converting the
ONNX itself. The node decisions are ours (fp16_rules.py, with calibration ranges when a scale table
is given); onnxconverter-common's float16 converter does the mechanical part (casting initializers,
inserting Cast nodes at FP16/FP32 boundaries). Inputs and outputs stay float32 by default so
callers feed and read the same arrays as for the FP32 model.
"""
from __future__ import annotations

import os
import re
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from trtopt.errors import TrtoptError, UsageError, first_line
from trtopt.quantization.fp16_rules import DEFAULT_RULES, FP16_MAX, GraphFacts, Rule, classify
from trtopt.quantization.modelio import (INLINE_LIMIT_BYTES, load_onnx, prepare_model, save_onnx, subgraphs,
                                        write_derived_onnx)
from trtopt.quantization.qdq import ScaleSource, amax_mapping


@dataclass
class Fp16Result:
    path: Path | None
    kept_fp32: dict[str, str] = field(default_factory=dict)  # node name -> reason
    converted_nodes: int = 0
    keep_io_types: bool = True


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give unnamed nodes stable names (in subgraphs too): the converter's block list and our reasons refer to names."""
    seen: set[str] = set()

    def visit(graph: onnx.GraphProto, prefix: str) -> None:
        for index, node in enumerate(graph.node):
            if not node.name or node.name in seen:
                node.name = f"{prefix}{node.op_type}_{index}"
            seen.add(node.name)
            for sub in subgraphs(node):
                visit(sub, f"{node.name}/{sub.name}/")

    visit(model.graph, "")


def _nested_nodes(node: onnx.NodeProto) -> list[str]:
    """Names of every node inside `node`'s subgraphs, at any depth."""
    found = []
    for graph in subgraphs(node):
        for inner in graph.node:
            found += [inner.name, *_nested_nodes(inner)]
    return found


def convert_model_fp16(
    model: onnx.ModelProto,
    *,
    scales: ScaleSource | Mapping[str, float] | None = None,
    keep_io_types: bool = True,
    exclude_nodes: Iterable[str] = (),
    exclude_op_types: Iterable[str] = (),
    rules: Iterable[Rule] = DEFAULT_RULES,
) -> tuple[onnx.ModelProto, dict[str, str]]:
    """Convert an in-memory model; returns (mixed-precision model, {node kept FP32: reason}).

    Every result is loaded by ONNX Runtime before it is returned. A node ONNX Runtime refuses in
    FP16 (no FP16 kernel on the CPU, a Cast or subgraph output typed differently) is kept FP32 and
    the conversion repeated; when the refusal names no node, or persists, the converter (i.e.
    trtopt) is at fault and a TrtoptError says so, naming the node.
    """
    _name_nodes(model)
    facts = GraphFacts.from_model(model, observed_ranges(scales) if scales is not None else None)
    kept = classify(model, facts, rules)
    unknown = sorted(set(exclude_nodes) - {n.name for n in model.graph.node})
    if unknown:
        raise UsageError(f"--exclude-nodes: no node named {unknown} in the model")
    op_types = set(exclude_op_types)
    for node in model.graph.node:
        if node.name in set(exclude_nodes) or node.op_type in op_types:
            kept.setdefault(node.name, "excluded by the user")
    # Two ways to settle a refusal inside an If/Loop/Scan body: keep the whole control-flow node FP32
    # (bodies that the converter types inconsistently), or only the refused body nodes (bodies that read
    # outer FP16 tensors). The first that loads wins.
    for whole_bodies in (True, False):
        attempt = dict(kept)
        converted, problem, node = _convert_until_loaded(model, attempt, keep_io_types, whole_bodies)
        if converted is not None:
            return converted, attempt
    where = f"node {node!r}" if node else "a node the message does not name"
    raise TrtoptError(f"FP16 conversion wrote a model ONNX Runtime cannot load ({where}); this is a trtopt bug, "
                      f"please report it with the model (workaround: --exclude-nodes/--exclude-op-types): "
                      f"{first_line(problem)[-300:]}")


def _convert_until_loaded(model: onnx.ModelProto, kept: dict[str, str], keep_io_types: bool,
                          whole_bodies: bool) -> tuple[onnx.ModelProto | None, str, str | None]:
    """Convert, load in ONNX Runtime, keep the refused node FP32, repeat; (model or None, last problem, node)."""
    by_name = {n.name: n for n in model.graph.node}
    enclosing = {inner: n.name for n in model.graph.node for inner in _nested_nodes(n)}
    names = set(by_name) | set(enclosing)
    problem, node = "", None
    for _ in range(MAX_LOAD_RETRIES):
        converted = _convert(model, kept, keep_io_types)
        problem = runtime_load_problem(converted) or ""
        if not problem:
            return converted, "", None
        node = _named_node(problem, names)
        if whole_bodies and node in enclosing:
            node = enclosing[node]
        if node is None or node in kept:
            break
        kept[node] = f"ONNX Runtime refuses it in FP16: {first_line(problem)[-160:]}"
        for inner in _nested_nodes(by_name[node]) if node in by_name else ():  # bodies stay FP32 with their node
            kept.setdefault(inner, f"inside {node}, kept FP32")
    return None, problem, node


MAX_LOAD_RETRIES = 16


def observed_ranges(scales: ScaleSource | Mapping[str, float]) -> dict[str, float]:
    """max |x| each tensor reached in calibration: the range FP16 must hold, not the INT8 clipping amax
    (entropy, percentile or MSE amax cut off exactly the outliers that would overflow FP16)."""
    stats = getattr(scales, "tensors", None)
    ranges = amax_mapping(scales)
    if isinstance(stats, Mapping):
        ranges.update({name: float(t.absmax) for name, t in stats.items() if getattr(t, "absmax", None) is not None})
    return ranges


def _convert(model: onnx.ModelProto, kept: Mapping[str, str], keep_io_types: bool) -> onnx.ModelProto:
    """onnxconverter-common's mechanical conversion with our block list (subgraphs included)."""
    from onnxconverter_common import float16

    try:
        with warnings.catch_warnings():
            # the converter warns per clamped tiny value; InitializerRangeRule already judged those constants
            warnings.simplefilter("ignore", UserWarning)
            converted = float16.convert_float_to_float16(
                model, keep_io_types=keep_io_types, node_block_list=sorted(kept), max_finite_val=FP16_MAX,
                min_positive_val=float(2.0 ** -24), disable_shape_infer=False)
    except Exception as exc:  # noqa: BLE001 - the converter raises assorted errors for models it cannot type
        raise UsageError(f"FP16 conversion failed: {type(exc).__name__}: {exc}") from exc
    drop_round_trip_casts(converted.graph)
    return converted


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((attr.i for attr in node.attribute if attr.name == "to"), None) if node.op_type == "Cast" else None


def drop_round_trip_casts(graph: onnx.GraphProto) -> int:
    """Remove FP32 -> FP16 -> FP32 Cast pairs between two nodes kept in FP32; returns how many.

    The converter casts every output of a kept node to FP16 and back for the next kept node, so a
    chain of FP32 nodes still passes its values through FP16: an activation of 2e6 (why they were
    kept) becomes inf. Readers of the FP32 value take it directly instead.
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {value.name for value in graph.output}
    rename: dict[str, str] = {}
    dropped: set[int] = set()
    for node in graph.node:
        if _cast_to(node) != onnx.TensorProto.FLOAT16 or node.output[0] in outputs:
            continue
        readers = consumers.get(node.output[0], [])
        if readers and all(_cast_to(r) == onnx.TensorProto.FLOAT and r.output[0] not in outputs for r in readers):
            rename.update({r.output[0]: node.input[0] for r in readers})
            dropped |= {id(node), *(id(r) for r in readers)}
    if not dropped:
        return 0
    kept_nodes = [node for node in graph.node if id(node) not in dropped]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    _rename_inputs(graph, rename)
    return len(dropped) // 2


def _rename_inputs(graph: onnx.GraphProto, rename: Mapping[str, str]) -> None:
    """Point every reader (subgraphs of If/Loop/Scan included: they read outer values by name) at the new names."""
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in rename:
                node.input[index] = rename[name]
        for sub in subgraphs(node):
            _rename_inputs(sub, rename)


def runtime_load_problem(model: onnx.ModelProto) -> str | None:
    """ONNX Runtime's first complaint when it loads ``model`` on the CPU, or None when it loads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        with tempfile.TemporaryDirectory(prefix="trtopt-fp16-check-") as folder:
            if model.ByteSize() > INLINE_LIMIT_BYTES:
                path = save_onnx(model, Path(folder) / "model.onnx", external=True)
                ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
            else:
                ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        return str(exc).strip() or type(exc).__name__
    return None


def _named_node(message: str, names: set[str]) -> str | None:
    """The node an ONNX Runtime load error names (``node (X)``, ``node with name 'X'``), if it is ours."""
    tokens = set(re.findall(r"[\w./:-]+", message))
    found = [name for name in names if name in tokens]
    return max(found, key=len) if found else None


def convert_fp16(model_path: str | os.PathLike[str], output_path: str | os.PathLike[str] | None = None, *,
                 scales: ScaleSource | Mapping[str, float] | None = None, keep_io_types: bool = True,
                 exclude_nodes: Iterable[str] = (), exclude_op_types: Iterable[str] = (),
                 rules: Iterable[Rule] = DEFAULT_RULES, force: bool = False) -> Fp16Result:
    """Write an FP16 mixed-precision copy of `model_path` and say which nodes kept FP32.

    Written atomically; a model too large for one protobuf keeps its weights in external data.
    A ScaleTable computed on different model bytes is refused unless `force`, as in ``quantize()``.
    """
    model = prepare_model(load_onnx(model_path))
    if scales is not None and hasattr(scales, "ensure_matches"):
        scales.ensure_matches(model_path, force=force)  # type: ignore[union-attr]
    converted, kept = convert_model_fp16(model, scales=scales, keep_io_types=keep_io_types, exclude_nodes=exclude_nodes,
                                         exclude_op_types=exclude_op_types, rules=rules)
    converted.metadata_props.add(key="trtopt.precision", value="fp16")
    result = Fp16Result(path=None, kept_fp32=kept, keep_io_types=keep_io_types,
                        converted_nodes=sum(1 for n in model.graph.node if n.name not in kept))
    if output_path is not None:
        result.path = write_derived_onnx(converted, output_path, model_path)
    return result


def convert_nodes_fp16(model_path: str | os.PathLike[str], output_path: str | os.PathLike[str],
                       nodes: Iterable[str], *, scales: ScaleSource | Mapping[str, float] | None = None) -> Fp16Result:
    """Convert only ``nodes`` of a (Q/DQ) model to FP16; every other node keeps its precision.

    What an INT8 build for a backend that runs FP16 (TensorRT, strongly typed) does with the layers
    it keeps in float: they were left out of INT8 for accuracy, FP16 keeps most of that and runs
    faster than FP32. The same rules as :func:`convert_model_fp16` apply to them (a node whose
    calibrated range overflows FP16 stays FP32 and says why). Q/DQ nodes and INT8 layers are not
    touched: constants they read (scales, biases) stay FP32 initializers, as TensorRT requires of
    Q/DQ scales. Inputs and outputs stay FP32. ``kept_fp32`` lists only the requested nodes kept FP32.
    """
    import copy

    model = load_onnx(model_path)
    _name_nodes(model)
    wanted = set(nodes) & {node.name for node in model.graph.node}
    others = [node.name for node in model.graph.node if node.name not in wanted]
    converted, kept = convert_model_fp16(copy.deepcopy(model), scales=scales, exclude_nodes=others)
    restore_fp32_constants(model.graph, converted.graph, wanted - set(kept))
    problem = runtime_load_problem(converted)
    if problem:
        raise TrtoptError(f"FP16 conversion of the layers kept float wrote a model ONNX Runtime cannot load; this is "
                          f"a trtopt bug, please report it with the model: {first_line(problem)[-300:]}")
    kept_fp32 = {name: reason for name, reason in kept.items() if name in wanted}
    result = Fp16Result(path=None, kept_fp32=kept_fp32, converted_nodes=len(wanted) - len(kept_fp32))
    result.path = write_derived_onnx(converted, output_path, model_path)
    return result


def restore_fp32_constants(source: onnx.GraphProto, converted: onnx.GraphProto, fp16_nodes: set[str]) -> None:
    """Give the FP32 initializers that nodes outside ``fp16_nodes`` read back their FP32 values.

    The converter casts every float initializer to FP16 and reads it back through a Cast to FP32 for
    blocked nodes: Q/DQ scales would lose precision and stop being constants. Restored here: blocked
    readers read the original initializer again (the Cast is dropped), FP16 readers get an FP16 copy.
    """
    original = {init.name: init for init in source.initializer if init.data_type == onnx.TensorProto.FLOAT}
    blocked_reads = {name for node in source.node if node.name not in fp16_nodes for name in node.input}
    restore = set(original) & blocked_reads
    fp16_copies: dict[str, str] = {}
    for init in converted.initializer:
        if init.name in restore and init.data_type == onnx.TensorProto.FLOAT16:
            duplicate = copy_tensor(init, f"{init.name}_fp16")
            fp16_copies[init.name] = duplicate.name
            converted.initializer.append(duplicate)
            init.CopyFrom(original[init.name])
    casts = {node.output[0]: node.input[0] for node in converted.node
             if _cast_to(node) == onnx.TensorProto.FLOAT and node.input[0] in fp16_copies}
    kept_nodes = [node for node in converted.node if node.output[0] not in casts or node.op_type != "Cast"]
    for node in kept_nodes:
        for index, name in enumerate(node.input):
            if name in casts:
                node.input[index] = casts[name]
            elif name in fp16_copies and node.name in fp16_nodes:
                node.input[index] = fp16_copies[name]
    del converted.node[:]
    converted.node.extend(kept_nodes)
    used = {name for node in converted.node for name in node.input}
    unused = [init for init in converted.initializer if init.name in fp16_copies.values() and init.name not in used]
    for init in unused:
        converted.initializer.remove(init)


def copy_tensor(tensor: onnx.TensorProto, name: str) -> onnx.TensorProto:
    duplicate = onnx.TensorProto()
    duplicate.CopyFrom(tensor)
    duplicate.name = name
    return duplicate
