"""The calibration session: the FP32 model with every target tensor exposed as an output.

Bounded memory for big models: the model is read without its external data (the graph only), the
target outputs are added to that graph, and the augmented graph is written to a temporary folder
that ONNX Runtime loads by path. Weights that live in external files stay there: the session is
told to resolve external data against the original model's folder
(``session.model_external_initializers_file_folder_path``), so a model above 2 GB is never held,
serialized or copied by trtopt. Weights embedded in the ``.onnx`` file (a model below 2 GB) are
moved into an external file next to the augmented graph first, which releases them from the
in-memory graph instead of serializing a second copy (and keeps shape inference light).
"""
from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnx.external_data_helper import convert_model_to_external_data, write_external_data_tensors

from trtopt.errors import UsageError
from trtopt.quantization.modelio import all_graphs
from trtopt.quantization.providers import ProviderChoice
from trtopt.quantization.targets import calibration_targets
from trtopt.tensors import TensorInfo

EXTERNAL_FOLDER_KEY = "session.model_external_initializers_file_folder_path"
SPIN_KEY = "session.intra_op.allow_spinning"


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in the graph: initializers and attribute tensors, subgraphs included."""
    for each in all_graphs(graph):
        yield from each.initializer
        for sparse in each.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in each.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors


def has_external_data(model: onnx.ModelProto) -> bool:
    return any(tensor.data_location == onnx.TensorProto.EXTERNAL for tensor in _tensors(model.graph))


def detach_weights(model: onnx.ModelProto, source_folder: Path, folder: Path) -> dict[str, str]:
    """Leave only the graph in ``model`` (read without external data); returns the session config.

    Weights embedded in it move to a file in ``folder`` (released from memory as they are
    written); weights already in external files stay there, and the session is pointed at them.
    """
    if has_external_data(model):
        return {EXTERNAL_FOLDER_KEY: os.fspath(source_folder.resolve())}
    # a unique name: onnx refuses a location that exists relative to the working directory
    location = f"weights-{uuid.uuid4().hex}.bin"
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location=location, size_threshold=1024)
    write_external_data_tensors(model, os.fspath(folder))
    return {}


class TargetRunner:
    """An ONNX Runtime session of the model with every target tensor exposed as an output.

    Takes ownership of ``model`` (the graph read with ``load_external_data=False``; it is changed).
    The targets are :func:`calibration_targets` of the graph once its weights are detached, which
    keeps shape inference from serializing them.
    """

    def __init__(self, model_path: Path, model: onnx.ModelProto, providers: ProviderChoice, *,
                 all_tensors: bool = False, threads: int | None = None) -> None:
        from trtopt.ortsession import OrtSession, make_session_options

        with tempfile.TemporaryDirectory(prefix="trtopt-calib-") as folder:
            config = detach_weights(model, Path(model_path).parent, Path(folder))
            targets = calibration_targets(model, all_tensors=all_tensors)
            present = {out.name for out in model.graph.output}
            model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in targets if name not in present)
            path = Path(folder) / "targets.onnx"
            onnx.save_model(model, os.fspath(path))
            del model
            # idle intra-op threads sleep instead of spinning: the statistics thread needs those cores
            options = make_session_options(threads, config={**config, SPIN_KEY: "0"})
            # no arena: it keeps the largest batch's buffers and grows in power-of-two steps, which
            # shows up as peak memory creeping with the number of batches
            options.enable_cpu_mem_arena = False
            try:
                self.session = OrtSession(path, options, providers.providers)
            except UsageError as exc:  # ONNX Runtime names the temporary graph; the user knows their file
                raise UsageError(str(exc).replace(os.fspath(path), os.fspath(model_path))) from exc
        self.providers = providers
        float_outputs = {info.name for info in self.session.outputs if np.dtype(info.dtype).kind == "f"}
        self.targets = [name for name in targets if name in float_outputs]

    @property
    def inputs(self) -> list[TensorInfo]:
        return self.session.inputs

    def infer(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The target activations of one batch (``feed`` already checked, e.g. a DataSource batch)."""
        outputs = self.session.run(feed)
        return {name: outputs[name] for name in self.targets}

    def close(self) -> None:
        self.session.close()
