"""ONNX Runtime backend: the embedded default on machines without a GPU, and the FP32 reference."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from trtopt.backends.base import Runner, TensorInfo, validate_feed
from trtopt.errors import UsageError

_ORT_TYPE_TO_NUMPY = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16,
    "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_,
    "tensor(uint16)": np.uint16, "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64,
}


def _tensor_info(node_arg: Any) -> TensorInfo:
    dtype = _ORT_TYPE_TO_NUMPY.get(node_arg.type)
    if dtype is None:
        raise UsageError(f"tensor {node_arg.name!r} has type {node_arg.type}, which trtopt does not handle")
    shape = tuple(d if isinstance(d, int) else (d or None) for d in node_arg.shape)
    return TensorInfo(node_arg.name, np.dtype(dtype), shape)


def make_session_options(threads: int | None = None, optimized_model_path: Path | None = None,
                         graph_optimization: str = "all") -> ort.SessionOptions:
    """Session options used both to build (serialize the optimized model) and to run."""
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_optimization]
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if optimized_model_path is not None:
        options.optimized_model_filepath = os.fspath(optimized_model_path)
    options.log_severity_level = 3
    return options


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX file in an ONNX Runtime InferenceSession.

    Thread-safety: ONNX Runtime documents ``InferenceSession.run`` as safe to call concurrently,
    so one runner may serve several threads.
    """

    backend = "onnxruntime"
    thread_safe = True

    def __init__(self, model_path: str | os.PathLike[str], threads: int | None = None,
                 providers: Sequence[str] | None = None, session_options: ort.SessionOptions | None = None) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise UsageError(f"ONNX model not found: {path}")
        options = session_options or make_session_options(threads)
        try:
            self._session = ort.InferenceSession(os.fspath(path), options, providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:  # ORT raises its own exception types for corrupt/unsupported models
            raise UsageError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        self.model_path = path
        self._inputs = [_tensor_info(arg) for arg in self._session.get_inputs()]
        self._outputs = [_tensor_info(arg) for arg in self._session.get_outputs()]
        self._output_names = [info.name for info in self._outputs]

    @property
    def inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorInfo]:
        return list(self._outputs)

    @property
    def providers(self) -> list[str]:
        return self._session.get_providers()

    def infer(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        arrays = validate_feed(feed, self._inputs)
        results = self._session.run(self._output_names, arrays)
        return dict(zip(self._output_names, results))

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]
