"""Deserializing a plan: one place for what must happen before ``deserialize_cuda_engine``.

Both the builder (to inspect what it built) and the runner (to run it) deserialize plans, and both
need the same preparation: TensorRT's standard plugins registered (an engine whose ONNX used a
plugin layer, e.g. from the ONNX parser's fallbacks, fails to deserialize without them; NVIDIA's
plugin API says ``initLibNvInferPlugins`` must be called once before the plugin registry is used),
and the lean runtime a version-compatible plan embeds allowed to run. TensorRT is passed in, never
imported here.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("trtopt.tensorrt")

_plugins_lock = threading.Lock()
_plugins_ready = False


def init_plugins(trt: Any, logger: Any) -> bool:
    """``trt.init_libnvinfer_plugins(logger, "")`` once per process; False (logged) when refused."""
    global _plugins_ready
    with _plugins_lock:
        if not _plugins_ready:
            _plugins_ready = bool(trt.init_libnvinfer_plugins(logger, ""))
            if not _plugins_ready:
                log.warning("TensorRT refused to register its standard plugins; engines using them will not load")
        return _plugins_ready


def deserialize(trt: Any, logger: Any, plan: bytes, version_compatible: bool) -> tuple[Any, Any]:
    """(runtime, engine or None). Keep the runtime alive as long as the engine."""
    init_plugins(trt, logger)
    runtime = trt.Runtime(logger)
    if version_compatible:
        runtime.engine_host_code_allowed = True  # version-compatible plans embed the lean runtime
    return runtime, runtime.deserialize_cuda_engine(plan)
