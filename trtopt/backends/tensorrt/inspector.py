"""Reading the engine inspector's JSON (what TensorRT actually built).

Saved beside every engine (built with DETAILED profiling verbosity) and summarised in the manifest:
layer count, precision of each layer's output, and the number of reformat layers, the usual sign
of badly placed Q/DQ nodes when an INT8 engine is no faster than FP16. The schema changed in 11.x:
the flat ``"Bindings"`` name list became ``"I/O Tensors"`` objects, and ``"Format/Datatype"`` was
split into ``"Format"`` and ``"DataType"``; both are read. Pure functions, CPU-tested.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from trtopt.errors import TrtoptError

_PRECISION_TOKENS = {
    "fp32": "FP32", "float": "FP32", "fp16": "FP16", "half": "FP16", "bf16": "BF16",
    "fp8": "FP8", "int8": "INT8", "int32": "INT32", "int64": "INT64", "bool": "BOOL",
    "uint8": "UINT8", "int4": "INT4", "fp4": "FP4",
}
_TOKEN_RE = re.compile(r"\b(" + "|".join(sorted(_PRECISION_TOKENS, key=len, reverse=True)) + r")\b", re.IGNORECASE)


@dataclass
class EngineSummary:
    """The facts worth keeping from the inspector output."""

    layers: int = 0
    layer_types: Counter = field(default_factory=Counter)
    precisions: Counter = field(default_factory=Counter)  # output precision of each layer
    reformat_layers: int = 0
    io_tensors: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"layers": self.layers, "reformat_layers": self.reformat_layers,
                "layer_types": dict(self.layer_types), "precisions": dict(self.precisions),
                "io_tensors": self.io_tensors}


def precision_of(text: str | None) -> str | None:
    """``"Row major linear FP32"`` / ``"Half"`` / ``"Int8"`` -> ``"FP32"`` / ``"FP16"`` / ``"INT8"``."""
    if not text:
        return None
    match = _TOKEN_RE.search(str(text))
    return _PRECISION_TOKENS[match.group(1).lower()] if match else None


def _tensor_precision(tensor: dict[str, Any]) -> str | None:
    return (
        precision_of(tensor.get("DataType"))
        or precision_of(tensor.get("Format/Datatype"))
        or precision_of(tensor.get("Format"))
    )


def _io_tensor(entry: Any) -> dict[str, Any]:
    if isinstance(entry, str):  # 10.x "Bindings": names only
        return {"name": entry}
    info: dict[str, Any] = {"name": entry.get("Name")}
    if "IOMode" in entry:
        info["mode"] = str(entry["IOMode"]).lower()
    if precision_of(entry.get("DataType")):
        info["dtype"] = precision_of(entry.get("DataType"))
    if "Dimensions" in entry:
        info["shape"] = list(entry["Dimensions"])
    return info


def parse_engine_information(text: str) -> EngineSummary:
    """Summarise ``get_engine_information(LayerInformationFormat.JSON)`` output (10.x or 11.x)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrtoptError(f"engine inspector output is not JSON: {exc}") from exc
    summary = EngineSummary()
    layers = data.get("Layers", [])
    summary.layers = len(layers)
    for layer in layers:
        if not isinstance(layer, dict):  # without DETAILED verbosity, layers are bare names
            continue
        kind = str(layer.get("LayerType", "unknown"))
        summary.layer_types[kind] += 1
        if "reformat" in kind.lower():
            summary.reformat_layers += 1
        outputs = layer.get("Outputs") or []
        precision = _tensor_precision(outputs[0]) if outputs and isinstance(outputs[0], dict) else None
        if precision:
            summary.precisions[precision] += 1
    io_entries = data.get("I/O Tensors", data.get("Bindings", []))
    summary.io_tensors = [_io_tensor(entry) for entry in io_entries]
    return summary
