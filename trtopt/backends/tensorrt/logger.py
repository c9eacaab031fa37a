"""TensorRT's log, routed into Python ``logging`` and kept for error messages.

When ``build_serialized_network`` or ``deserialize_cuda_engine`` fail they return None and the only
explanation went to the logger. :class:`LogRouter` (pure Python, CPU-tested) forwards each message
to the ``trtopt.tensorrt`` logger at the matching level and remembers errors, so the exception we
raise can quote what TensorRT said. :func:`make_trt_logger` wraps a router in a ``trt.ILogger``
subclass; it is the only part that needs TensorRT.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("trtopt.tensorrt")

# trt.ILogger.Severity member name -> logging level
SEVERITY_LEVELS = {
    "INTERNAL_ERROR": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "INFO": logging.INFO,
    "VERBOSE": logging.DEBUG,
}


class LogRouter:
    """Forwards TensorRT messages to `logging` and keeps the error-level ones (thread-safe)."""

    def __init__(self, keep: int = 50) -> None:
        self._keep = keep
        self._errors: list[str] = []
        self._lock = threading.Lock()

    def emit(self, severity_name: str, message: str) -> None:
        level = SEVERITY_LEVELS.get(severity_name.rsplit(".", 1)[-1].upper(), logging.INFO)
        if log.isEnabledFor(level):  # VERBOSE builds log thousands of lines; drop them cheaply
            log.log(level, "%s", message.rstrip())
        if level >= logging.ERROR:
            with self._lock:
                self._errors.append(message.strip())
                del self._errors[:-self._keep]

    def take_errors(self) -> list[str]:
        """Errors seen since the last call (and forget them)."""
        with self._lock:
            errors, self._errors = self._errors, []
        return errors

    def explain(self, what: str) -> str:
        """``what`` followed by TensorRT's own error lines, for an exception message."""
        errors = self.take_errors()
        if not errors:
            return f"{what} (TensorRT logged no error; rerun with -vv for its verbose log)"
        return f"{what}: " + " | ".join(errors)


def make_trt_logger(router: LogRouter) -> Any:
    """A ``trt.ILogger`` that hands every message to `router` (imports TensorRT)."""
    import tensorrt as trt

    class _RoutingLogger(trt.ILogger):
        """trt.ILogger subclass: TensorRT calls log() from its own threads too; the router locks."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            router.emit(getattr(severity, "name", str(severity)), msg)

    return _RoutingLogger()
