"""``--backend auto|NAME``: which backend runs here, and why.

``auto`` picks TensorRT only when the ``tensorrt`` package imports *and* a CUDA device is present;
otherwise it falls back to ONNX Runtime on the CPU and says in one line which of the two was
missing, so a user who expected a GPU build learns why they did not get one. An explicit name is
validated up front: an unknown name is a usage error, a known but unusable backend a failure with
its reason (instead of a crash deep inside a build).
"""
from __future__ import annotations

import importlib

from trtopt.backends.registry import BACKEND_MODULES, get_backend
from trtopt.errors import TrtoptError, UsageError

FALLBACK = "onnxruntime"


def tensorrt_status() -> tuple[str | None, str]:
    """(TensorRT version, "") when the package imports, else (None, why not)."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as exc:
        return None, f"the tensorrt Python package is not installed ({exc})"
    except Exception as exc:  # noqa: BLE001 - a broken install raises OSError/RuntimeError from its native libraries
        return None, f"the tensorrt package failed to import ({type(exc).__name__}: {exc})"
    return str(getattr(trt, "__version__", "unknown")), ""


def tensorrt_availability() -> tuple[bool, str]:
    """(usable?, one line): TensorRT importable and a CUDA device present."""
    from trtopt.cuda.device import probe_devices

    version, why = tensorrt_status()
    if version is None:
        return False, why
    count, why = probe_devices()
    if count == 0:
        return False, f"TensorRT {version} is installed but {why}"
    return True, f"TensorRT {version} with {count} CUDA device(s)"


def select_backend(requested: str) -> tuple[str, str]:
    """Resolve ``requested`` ("auto" or a backend name) to (backend name, one-line reason)."""
    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        usable, why = tensorrt_availability()
        if usable:
            return "tensorrt", f"auto: {why}"
        return FALLBACK, f"auto: not using TensorRT because {why}; falling back to ONNX Runtime on the CPU"
    if requested not in BACKEND_MODULES:
        raise UsageError(f"--backend {requested!r} is unknown; choose auto or one of {sorted(BACKEND_MODULES)}")
    usable, why = get_backend(requested).availability()
    if not usable:
        raise TrtoptError(f"--backend {requested} cannot run here: {why}")
    return requested, f"{requested}: requested explicitly"
