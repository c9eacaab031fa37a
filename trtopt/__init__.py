"""trtopt: from a trained network to a fast, verified inference engine.

The public API is re-exported lazily so that ``import trtopt`` stays light: serving code that only
calls :func:`load` never imports torch (needed for training and export only) or the quantization
machinery.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> "module:attribute"
_EXPORTS = {
    "export_onnx": "trtopt.export:export_onnx",
    "calibrate": "trtopt.quantization.calibrate:calibrate",
    "quantize": "trtopt.quantization.qdq:quantize",
    "convert_fp16": "trtopt.quantization.fp16:convert_fp16",
    "build": "trtopt.pipeline:build",
    "load": "trtopt.repository:load",
    "benchmark": "trtopt.bench:benchmark",
    "TrtoptError": "trtopt.errors:TrtoptError",
    "UsageError": "trtopt.errors:UsageError",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'trtopt' has no attribute {name!r}")
    module_name, attribute = target.split(":")
    value = getattr(importlib.import_module(module_name), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
