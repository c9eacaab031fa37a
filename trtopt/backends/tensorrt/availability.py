"""Whether TensorRT can run here: the package imports and a CUDA device is present.

Kept apart from the builder and runner so that asking costs one import attempt and a device probe,
never a TensorRT builder or CUDA context.
"""
from __future__ import annotations

import importlib


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
