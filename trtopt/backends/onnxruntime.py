"""ONNX Runtime backend: the embedded default on machines without a GPU, and the FP32 reference.

Its "engine" is ONNX Runtime's own optimized model (Q/DQ already fused into QLinearConv/QGemm,
constants folded), serialized at the ``extended`` level so the file holds no layout-specific
(NCHWc) kernels, plus the session options that produced it; loading reopens it with those
options, so the build's accuracy check and later serving run the same graph.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import platform
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from trtopt.backends.base import Runner
from trtopt.backends.registry import BuildOptions, BuiltEngine, exact_match_problems
from trtopt.errors import TrtoptError, UsageError, first_line
from trtopt.fileio import atomic_write_json, read_json
from trtopt.ortsession import OrtSession, make_session_options
from trtopt.tensors import ShapeProfile


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX file in an ONNX Runtime InferenceSession.

    Thread-safety: ONNX Runtime documents ``InferenceSession.run`` as safe to call concurrently,
    so one runner may serve several threads.
    """

    backend = "onnxruntime"
    thread_safe = True

    def __init__(self, model_path: str | os.PathLike[str], threads: int | None = None,
                 providers: Sequence[Any] | None = None, session_options: ort.SessionOptions | None = None,
                 profile: ShapeProfile | None = None) -> None:
        self._session = OrtSession(model_path, session_options or make_session_options(threads), providers)
        self.model_path = self._session.path
        self._inputs = self._session.inputs
        if profile is not None:  # an engine built for a shape profile rejects shapes outside it, like TensorRT
            from trtopt.shapes import profile_bounds

            self._inputs = [dataclasses.replace(info, bounds=profile_bounds(info, profile)) for info in self._inputs]
        self._outputs = self._session.outputs

    @property
    def providers(self) -> list[str]:
        return self._session.providers

    @property
    def closed(self) -> bool:
        return self._session.closed

    def _infer(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return self._session.run(feed)

    def close(self) -> None:
        self._session.close()


log = logging.getLogger("trtopt.onnxruntime")

ENGINE_FILE = "model.ort.onnx"
SESSION_FILE = "session.json"
SAVED_OPTIMIZATION = "extended"  # portable across CPUs of one ISA; "all" is applied again at load
# Symmetric int8 activations (the `tensorrt` Q/DQ encoding) hit ONNX Runtime's S8S8 MatMul/Gemm kernels,
# which saturate int16 sums on AVX2 machines (max error 0.05 -> 2.4 measured on a small MLP). Such models
# run with Q/DQ fusion off: exact simulated quantization, i.e. the numbers TensorRT would compute.
_SIMULATE_QDQ = {"session.disable_quant_qdq": "1"}


def qdq_session_config(encoding: str | None) -> dict[str, str]:
    """Session config entries for a Q/DQ model of ``encoding`` (``tensorrt``: simulated, see above)."""
    return dict(_SIMULATE_QDQ) if encoding == "tensorrt" else {}


def _external_weights(onnx_path: Path) -> dict[str, str]:
    """Save config that keeps the optimized model's weights in a file beside it when the model keeps
    its own external (a protobuf cannot hold more than 2 GB; large weights stay out of it)."""
    from trtopt.quantization.modelio import uses_external_data

    if not uses_external_data(onnx_path):
        return {}
    return {"session.optimized_model_external_initializers_file_name": f"{ENGINE_FILE}.data",
            "session.optimized_model_external_initializers_min_size_in_bytes": "1024"}


class OnnxRuntimeBackend:
    """Backend protocol (trtopt.backends.registry.Backend) for ONNX Runtime on the CPU."""

    name = "onnxruntime"
    title = "ONNX Runtime on the CPU"
    float_precision = "fp32"  # ONNX Runtime's CPU kernels are FP32; FP16 would add casts, not speed
    engine_fields = ("threads",)  # recorded in session.json, which the engine folder holds

    @property
    def default_encoding(self) -> str:
        """onnxruntime-vnni on CPUs whose int8 kernels cannot saturate (full 8-bit weights), else onnxruntime-cpu."""
        from trtopt.quantization.encodings import host_cpu_encoding

        return host_cpu_encoding()

    def availability(self) -> tuple[bool, str]:
        return True, f"onnxruntime {ort.__version__} on the CPU"

    def version(self) -> str:
        return str(ort.__version__)

    def device(self) -> dict[str, Any]:
        from trtopt.hostinfo import cpu_isa_flags, cpu_model

        return {"kind": "cpu", "name": cpu_model(), "machine": platform.machine(), "isa": cpu_isa_flags()}

    def compatibility_problems(self, manifest: dict[str, Any]) -> list[str]:
        return exact_match_problems(manifest, self.version(), self.device())

    def check_options(self, options: BuildOptions) -> None:
        """Every option ONNX Runtime reads (threads) is checked by the settings themselves."""

    def build(self, onnx_path: Path, staging_dir: Path, options: BuildOptions) -> BuiltEngine:
        """Let ONNX Runtime optimize the model and keep its result, with the options that run it."""
        threads = options.engine.threads
        config = qdq_session_config(options.encoding)
        engine = Path(staging_dir) / ENGINE_FILE
        build_options = make_session_options(threads, engine, SAVED_OPTIMIZATION,
                                             {**config, **_external_weights(onnx_path)})
        try:
            ort.InferenceSession(os.fspath(onnx_path), build_options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT's own exception types: report the model and the first line
            raise TrtoptError(f"ONNX Runtime could not build {onnx_path}: {first_line(exc)}") from exc
        if not engine.is_file():
            raise TrtoptError(f"ONNX Runtime did not write its optimized model for {onnx_path}")
        level = SAVED_OPTIMIZATION
        # ONNX Runtime can save an optimized model it cannot read back (its FP16 cast insertion
        # duplicates names inside If subgraphs); then the engine is the model itself, optimized at load.
        try:
            ort.InferenceSession(os.fspath(engine), make_session_options(threads, config=config),
                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT's own exception types
            log.info("ONNX Runtime cannot reload its optimized %s (%s); the engine is the model itself", onnx_path,
                     first_line(exc))
            shutil.copyfile(onnx_path, engine)
            level = "none"
        session = {
            "graph_optimization": "all",
            "saved_optimization": level,
            "intra_op_num_threads": threads,
            "providers": ["CPUExecutionProvider"],
            "config": config,
        }
        atomic_write_json(Path(staging_dir) / SESSION_FILE, session)
        return BuiltEngine(
            engine_file=ENGINE_FILE, manifest_fields={"onnxruntime": {"session_file": SESSION_FILE, **session}}
        )

    def load(self, engine_dir: Path, manifest: dict[str, Any], **runner_options: Any) -> Runner:
        """Reopen the optimized model with the recorded session options (threads may be overridden)."""
        folder = Path(engine_dir)
        session = _read_session(folder / SESSION_FILE)
        threads = runner_options.pop("threads", None) or session.get("intra_op_num_threads")
        if runner_options:
            raise UsageError(f"the onnxruntime backend takes only threads=, not {sorted(runner_options)}")
        options = make_session_options(threads, graph_optimization=str(session.get("graph_optimization", "all")),
                                       config=session.get("config"))
        profile = ShapeProfile.from_json((manifest.get("io") or {}).get("profile"))
        engine_file = (manifest.get("engine") or {}).get("file", ENGINE_FILE)
        return OnnxRuntimeRunner(folder / str(engine_file), session_options=options,
                                 providers=session.get("providers"), profile=profile)


_SESSION_FIELDS = {  # session.json key: (check, what it must be)
    "graph_optimization": (lambda v: v in ("disabled", "basic", "extended", "all"),
                           "one of disabled, basic, extended, all"),
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
