"""ONNX Runtime sessions with trtopt's tensor metadata: the FP32 reference engine every layer runs.

Calibration runs the model here to collect activations, and the ONNX Runtime backend wraps the same
session in a Runner. Keeping it below both means quantization never imports a backend, and both open
models with one set of session options and one error message for a model ONNX Runtime rejects.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from trtopt.errors import UsageError
from trtopt.tensors import TensorInfo

_ORT_TYPE_TO_NUMPY = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16,
    "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_,
    "tensor(uint16)": np.uint16, "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64,
}
_OPTIMIZATION_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def tensor_info(node_arg: Any) -> TensorInfo:
    """TensorInfo of an ONNX Runtime NodeArg (symbolic dims stay names, unknown dims None)."""
    dtype = _ORT_TYPE_TO_NUMPY.get(node_arg.type)
    if dtype is None:
        raise UsageError(f"tensor {node_arg.name!r} has type {node_arg.type}, which trtopt does not handle")
    shape = tuple(d if isinstance(d, int) else (d or None) for d in node_arg.shape)
    return TensorInfo(node_arg.name, np.dtype(dtype), shape)


def check_threads(threads: int | None) -> None:
    """--threads: None (ONNX Runtime's default) or a positive count; ORT itself accepts -1 silently."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UsageError(f"--threads must be positive, got {threads!r}")


def make_session_options(
    threads: int | None = None,
    optimized_model_path: Path | None = None,
    graph_optimization: str = "all",
    config: Mapping[str, str] | None = None,
) -> ort.SessionOptions:
    """Session options used both to build (serialize the optimized model) and to run."""
    check_threads(threads)
    options = ort.SessionOptions()
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    options.graph_optimization_level = _OPTIMIZATION_LEVELS[graph_optimization]
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if optimized_model_path is not None:
        options.optimized_model_filepath = os.fspath(optimized_model_path)
    options.log_severity_level = 3
    return options


class OrtSession:
    """One InferenceSession: ``inputs``/``outputs`` as TensorInfo, ``run(feed)`` -> {name: array}.

    ``run`` does not check the feed: callers hand it arrays already checked against ``inputs``
    (a DataSource's batches, or the Runner template).
    """

    def __init__(self, model_path: str | os.PathLike[str], options: ort.SessionOptions,
                 providers: Sequence[Any] | None = None) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise UsageError(f"ONNX model not found: {path}")
        try:
            self._session = ort.InferenceSession(os.fspath(path), options,
                                                 providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types for corrupt/unsupported models
            raise UsageError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        self.path = path
        self.inputs = [tensor_info(arg) for arg in self._session.get_inputs()]
        self.outputs = [tensor_info(arg) for arg in self._session.get_outputs()]
        self._output_names = [info.name for info in self.outputs]

    @property
    def providers(self) -> list[str]:
        return self._session.get_providers()

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._output_names, self._session.run(self._output_names, dict(feed))))

    @property
    def closed(self) -> bool:
        return self._session is None

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]
