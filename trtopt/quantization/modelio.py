"""Loading, normalizing and saving a user's ONNX file, with errors that say what is wrong with it.

Q/DQ insertion, FP16 conversion and the build all start from a user-supplied file; a truncated
download should fail with one line naming the file, not with a protobuf traceback deep inside a
converter. Models come in every style, so this module also evens out what the passes after it must
not have to care about:

* **Old IR (< 4)**: every initializer is also listed as a graph input (the ONNX model zoo's
  classics). Such inputs are constants, not feeds: :func:`prepare_model` drops them from the
  inputs, so runtimes fold them and nobody is asked to feed them. A user who does feed one gives
  its value (checked against the initializer's dtype and shape), and the model is built with it.
* **Integer and boolean inputs** (token ids, masks, lengths) are fine; only a model without any
  floating-point computation is refused, because FP16/INT8 and the accuracy check have nothing to do.
* **External data and > 2 GB**: weights stored beside the ``.onnx`` travel with it;
  :func:`save_onnx` keeps them external (a single protobuf cannot exceed 2 GB).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from trtopt.errors import UsageError, first_line
from trtopt.fileio import atomic_write_bytes
from trtopt.tensors import TensorInfo

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
# Inline protobufs are capped at 2 GiB; leave room for the graph itself.
INLINE_LIMIT_BYTES = 1 << 30
MIN_IR_WITHOUT_INITIALIZER_INPUTS = 4


def load_onnx(path: str | os.PathLike[str], *, require_float: bool = True) -> onnx.ModelProto:
    """Parse and check an ONNX file (external data included); UsageError (exit 2) naming the file.

    With ``require_float`` a model with no floating-point computation at all (no float input,
    initializer, constant or output) is refused with that reason.
    """
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"ONNX model not found: {file}")
    try:
        onnx.checker.check_model(os.fspath(file))  # by path: works above 2 GB and checks external data
        model = onnx.load(os.fspath(file))
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError, ValidationError, or plain errors
        raise UsageError(f"{file} is not a valid ONNX model (corrupt or truncated?): {first_line(exc)}") from exc
    if not model.graph.node:
        raise UsageError(f"{file} has an empty graph")
    if require_float and not has_float_computation(model):
        inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
        described = ", ".join(f"{i.name}: {_type_name(i.type.tensor_type.elem_type)}" for i in inputs) or "none"
        raise UsageError(f"{file} has no floating-point computation (inputs: {described}; no float weights, "
                         "constants or outputs): FP16, INT8 and accuracy checks have nothing to work on")
    return model


def _type_name(elem_type: int) -> str:
    return onnx.TensorProto.DataType.Name(elem_type).lower()


def has_float_computation(model: onnx.ModelProto) -> bool:
    """True when any graph input, output, initializer or Constant is floating point."""
    graph = model.graph
    if any(v.type.tensor_type.elem_type in FLOAT_TYPES for v in [*graph.input, *graph.output]):
        return True
    if any(init.data_type in FLOAT_TYPES for init in graph.initializer):
        return True
    return any(attr.t.data_type in FLOAT_TYPES for node in graph.node if node.op_type == "Constant"
               for attr in node.attribute if attr.name == "value")


def uses_external_data(path: str | os.PathLike[str]) -> bool:
    """True when the file keeps weights in external data files (they must travel with it)."""
    model = onnx.load(os.fspath(path), load_external_data=False)
    return any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)


def initializer_inputs(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """Graph inputs that an initializer backs (old IR style), as TensorInfo of the initializer."""
    listed = {i.name for i in model.graph.input}
    return {init.name: TensorInfo(init.name, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type)),
                                  tuple(int(d) for d in init.dims))
            for init in model.graph.initializer if init.name in listed}


def feed_inputs(model: onnx.ModelProto) -> list[TensorInfo]:
    """The inputs a user must feed (graph inputs without an initializer), from the graph's declared types."""
    backed = {init.name for init in model.graph.initializer}
    infos = []
    for value in model.graph.input:
        if value.name in backed:
            continue
        tensor = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
        infos.append(TensorInfo(value.name, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)), shape))
    return infos


def prepare_model(model: onnx.ModelProto, overrides: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """Initializer-backed inputs become constants (with the user's value where ``overrides`` has one).

    The IR version is raised to 4 when lower (IR 4 lets initializers stand alone; nothing else
    changes meaning), so every runtime folds them instead of asking for them.
    """
    overrides = dict(overrides or {})
    backed = initializer_inputs(model)
    unknown = sorted(set(overrides) - set(backed))
    if unknown:
        raise UsageError(f"input(s) {unknown} are not initializer-backed inputs of the model")
    if not backed and model.ir_version >= MIN_IR_WITHOUT_INITIALIZER_INPUTS:
        return model
    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    kept = [i for i in prepared.graph.input if i.name not in backed]
    del prepared.graph.input[:]
    prepared.graph.input.extend(kept)
    for init in prepared.graph.initializer:
        if init.name in overrides:
            init.CopyFrom(numpy_helper.from_array(overrides[init.name], init.name))
    prepared.ir_version = max(prepared.ir_version, MIN_IR_WITHOUT_INITIALIZER_INPUTS)
    return prepared


# ops whose output over constants is a constant cheap to compute once: ConstantOfShape fills a shape,
# the others only move or retype values (so a chain of them over a constant folds too)
_FOLDABLE_OPS = frozenset({"ConstantOfShape", "Reshape", "Transpose", "Flatten", "Identity", "Cast"})


def fold_generated_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turn weights computed at run time from constants into initializers (in place; returns the model).

    Some exporters (the model zoo's classics among them) generate weights at run time: a
    ``ConstantOfShape`` with a constant shape, or a ``Reshape``/``Transpose``/... of an initializer
    (Inception v1's classifier weight is a Reshape of one). Q/DQ quantizes only constant weights,
    so a layer whose weight is computed would keep float weights and run unfused.
    """
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    # an initializer that is also a graph input can be overridden at run time: not a constant
    overridable = {value.name for value in graph.input}
    initializers = {init.name: init for init in graph.initializer if init.name not in overridable}
    outputs = {value.name for value in graph.output}
    opsets = {opset.domain: opset.version for opset in model.opset_import}
    kept = []
    for node in graph.node:
        inputs = [name for name in node.input if name]
        computed = node.op_type in _FOLDABLE_OPS and inputs and all(name in initializers for name in inputs)
        if not computed or outputs.intersection(node.output):
            kept.append(node)
            continue
        feeds = {name: numpy_helper.to_array(initializers[name]) for name in inputs}
        try:  # with the model's opsets: attributes of these ops changed across versions
            folded = ReferenceEvaluator(node, opsets=opsets).run(None, feeds)
        except Exception:  # noqa: BLE001 - folding only helps quantization; the runtime computes it anyway
            kept.append(node)
            continue
        for name, value in zip(node.output, folded):
            initializers[name] = numpy_helper.from_array(np.asarray(value), name)
            graph.initializer.append(initializers[name])
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)
    return model


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike[str], *, external: bool | None = None) -> Path:
    """Write ``model`` to ``path``; weights go to ``<name>.data`` beside it when ``external``.

    ``external=None`` keeps the weights external when the model is too large for one protobuf. The
    caller writes into a folder that is published atomically (an engine's staging folder) or a
    private temporary folder: an external-data model is two files, so one rename cannot cover it.
    """
    target = Path(path)
    if external is None:
        external = model.ByteSize() > INLINE_LIMIT_BYTES
    data_file = target.name + ".data"
    if (target.parent / data_file).exists():
        (target.parent / data_file).unlink()  # save_model appends to an existing data file
    try:
        onnx.save_model(model, os.fspath(target), save_as_external_data=external, all_tensors_to_one_file=True,
                        location=data_file, size_threshold=1024)
    except ValueError as exc:  # protobuf refuses > 2 GB inline
        raise UsageError(f"cannot write {target}: {exc}") from exc
    return target


def write_derived_onnx(model: onnx.ModelProto, path: str | os.PathLike[str],
                       source: str | os.PathLike[str]) -> Path:
    """Write a model derived from ``source`` (Q/DQ, FP16): one atomic file when it fits inline,
    else (or when ``source`` keeps its weights in external data) with its weights external too."""
    if model.ByteSize() > INLINE_LIMIT_BYTES or uses_external_data(source):
        return save_onnx(model, path, external=True)
    return atomic_write_bytes(path, model.SerializeToString())


@contextlib.contextmanager
def prepared_source(source: str | os.PathLike[str],
                    overrides: Mapping[str, np.ndarray] | None = None) -> Iterator[Path]:
    """The model every build stage reads: ``source`` itself, or a prepared copy in a private temp folder.

    A copy is made only when :func:`prepare_model` changes something (old-IR initializer inputs or
    fed overrides); external data stays external in it. The folder is removed on exit.
    """
    path = Path(source)
    model = load_onnx(path)
    prepared = prepare_model(model, overrides)
    unchanged = prepared is model
    # the build runs inside this context: holding the parsed weights here would keep a whole copy of
    # them in memory next to every session the build opens (2.3 GB more for a 2.3 GB model)
    del model
    if unchanged:
        del prepared
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="trtopt-model-") as folder:
        saved = save_onnx(prepared, Path(folder) / path.name, external=uses_external_data(path) or None)
        del prepared
        yield saved


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The bodies of If/Loop/Scan (and any other graph attribute) of ``node``."""
    return [graph for attr in node.attribute for graph in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)]


def all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph in it, at any depth."""
    yield graph
    for node in graph.node:
        for subgraph in subgraphs(node):
            yield from all_graphs(subgraph)
