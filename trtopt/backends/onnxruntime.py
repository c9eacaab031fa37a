"""ONNX Runtime backend: the embedded default on machines without a GPU, and the FP32 reference.

Its "engine" is ONNX Runtime's own optimized model (Q/DQ already fused into QLinearConv/QGemm,
constants folded), serialized at the ``extended`` level so the file holds no layout-specific
(NCHWc) kernels, plus the session options that produced it; loading reopens it with those
options, so the build's accuracy check and later serving run the same graph.
"""
from __future__ import annotations

import dataclasses
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from trtopt.backends.base import Runner, TensorInfo, closed_runner, validate_feed
from trtopt.backends.registry import BuildOptions, BuiltEngine, ShapeProfile, exact_match_problems
from trtopt.errors import TrtoptError, UsageError
from trtopt.fileio import atomic_write_json, read_json

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


def check_threads(threads: int | None) -> None:
    """--threads: None (ONNX Runtime's default) or a positive count; ORT itself accepts -1 silently."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UsageError(f"--threads must be a whole number of at least 1, got {threads!r}")


def make_session_options(threads: int | None = None, optimized_model_path: Path | None = None,
                         graph_optimization: str = "all", config: Mapping[str, str] | None = None) -> ort.SessionOptions:
    """Session options used both to build (serialize the optimized model) and to run."""
    check_threads(threads)
    options = ort.SessionOptions()
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
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
                 providers: Sequence[str] | None = None, session_options: ort.SessionOptions | None = None,
                 profile: ShapeProfile | None = None) -> None:
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
        if profile is not None:  # an engine built for a shape profile rejects shapes outside it, like TensorRT
            from trtopt.shapes import profile_bounds

            self._inputs = [dataclasses.replace(info, bounds=profile_bounds(info, profile)) for info in self._inputs]
        self._outputs = [_tensor_info(arg) for arg in self._session.get_outputs()]
        self._output_names = [info.name for info in self._outputs]

    @property
    def providers(self) -> list[str]:
        return self._session.get_providers()

    def infer(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if self._session is None:
            raise closed_runner(self.backend)
        arrays = validate_feed(feed, self._inputs)
        results = self._session.run(self._output_names, arrays)
        return dict(zip(self._output_names, results))

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]


ENGINE_FILE = "model.ort.onnx"
SESSION_FILE = "session.json"
SAVED_OPTIMIZATION = "extended"  # portable across CPUs of one ISA; "all" is applied again at load
# Symmetric int8 activations (the `tensorrt` Q/DQ encoding) hit ONNX Runtime's S8S8 MatMul/Gemm kernels,
# which saturate int16 sums on AVX2 machines (max error 0.05 -> 2.4 measured on a small MLP). Such models
# run with Q/DQ fusion off: exact simulated quantization, i.e. the numbers TensorRT would compute.
_SIMULATE_QDQ = {"session.disable_quant_qdq": "1"}


class OnnxRuntimeBackend:
    """Backend protocol (trtopt.backends.registry.Backend) for ONNX Runtime on the CPU."""

    name = "onnxruntime"

    def availability(self) -> tuple[bool, str]:
        return True, f"onnxruntime {ort.__version__} on the CPU"

    def version(self) -> str:
        return str(ort.__version__)

    def device(self) -> dict[str, Any]:
        from trtopt.hostinfo import cpu_isa_flags, cpu_model

        return {"kind": "cpu", "name": cpu_model(), "machine": platform.machine(), "isa": cpu_isa_flags()}

    def compatibility_problems(self, manifest: dict[str, Any]) -> list[str]:
        return exact_match_problems(manifest, self.version(), self.device())

    def build(self, onnx_path: Path, staging_dir: Path, options: BuildOptions) -> BuiltEngine:
        """Let ONNX Runtime optimize the model and keep its result, with the options that run it."""
        config = dict(_SIMULATE_QDQ) if options.extra.get("encoding") == "tensorrt" else {}
        session = {"graph_optimization": "all", "saved_optimization": SAVED_OPTIMIZATION,
                   "intra_op_num_threads": options.threads, "providers": ["CPUExecutionProvider"], "config": config}
        build_options = make_session_options(options.threads, Path(staging_dir) / ENGINE_FILE, SAVED_OPTIMIZATION, config)
        try:
            ort.InferenceSession(os.fspath(onnx_path), build_options, providers=session["providers"])
        except Exception as exc:  # ORT's own exception types: report the model and the first line
            raise TrtoptError(f"ONNX Runtime could not build {onnx_path}: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
        if not (Path(staging_dir) / ENGINE_FILE).is_file():
            raise TrtoptError(f"ONNX Runtime did not write its optimized model for {onnx_path}")
        atomic_write_json(Path(staging_dir) / SESSION_FILE, session)
        return BuiltEngine(engine_file=ENGINE_FILE, manifest_fields={"onnxruntime": {"session_file": SESSION_FILE, **session}})

    def load(self, engine_dir: Path, manifest: dict[str, Any], **runner_options: Any) -> Runner:
        """Reopen the optimized model with the recorded session options (threads may be overridden)."""
        from trtopt.shapes import profile_from_json

        folder = Path(engine_dir)
        session = _read_session(folder / SESSION_FILE)
        threads = runner_options.pop("threads", None) or session.get("intra_op_num_threads")
        if runner_options:
            raise UsageError(f"the onnxruntime backend takes only threads=, not {sorted(runner_options)}")
        options = make_session_options(threads, graph_optimization=str(session.get("graph_optimization", "all")),
                                       config=session.get("config"))
        profile = profile_from_json((manifest.get("io") or {}).get("profile"))
        engine_file = (manifest.get("engine") or {}).get("file", ENGINE_FILE)
        return OnnxRuntimeRunner(folder / str(engine_file), session_options=options,
                                 providers=session.get("providers"), profile=profile)


_SESSION_FIELDS = {  # session.json key: (check, what it must be)
    "graph_optimization": (lambda v: v in ("disabled", "basic", "extended", "all"), "one of disabled, basic, extended, all"),
    "intra_op_num_threads": (lambda v: v is None or (type(v) is int and v >= 1), "null or a positive integer"),
    "providers": (lambda v: isinstance(v, list) and all(isinstance(p, str) for p in v), "a list of provider names"),
    "config": (lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in (*v, *v.values())),
               "a mapping of strings to strings"),
}


def _read_session(path: Path) -> dict[str, Any]:
    """The engine's recorded session options, checked: a hand-edited file is a usage error naming it."""
    session = read_json(path, "ONNX Runtime session options")
    if not isinstance(session, dict):
        raise UsageError(f"{path}: expected a JSON object of session options; rebuild the engine")
    for key, (valid, what) in _SESSION_FIELDS.items():
        if key in session and not valid(session[key]):
            raise UsageError(f"{path}: {key!r} must be {what}, got {session[key]!r}; rebuild the engine")
    return session


BACKEND = OnnxRuntimeBackend()
