"""The scale table: the calibration's source of truth, keyed to the exact model bytes.

JSON, human readable::

    {"format": "trtopt-scale-table", "version": 1, "model_sha256": ..., "method": "entropy",
     "params": {...}, "num_samples": 512, "tensors": {"input": {"amax": 2.64, "min": ..., ...}}}

``table_id`` is the sha256 of the canonical JSON (sorted keys, no whitespace), so a manifest can
name the exact calibration an engine was built from. A table computed on other model bytes is
refused (:meth:`ScaleTable.ensure_matches`): a reused stale cache is a silent accuracy bug.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trtopt.errors import UsageError
from trtopt.fileio import atomic_write_json, read_json, sha256_bytes, sha256_file

FORMAT = "trtopt-scale-table"
VERSION = 1
# Scales are float32 (amax / 127) in Q/DQ nodes and TensorRT caches: an amax whose scale falls below
# the smallest normal float32 underflows to 0 or loses its precision, and one above float32's max overflows.
_FLOAT32_TINY = 1.1754943508222875e-38
_FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class TensorStats:
    """What calibration learned about one activation tensor.

    ``amax`` is the calibrated clip value (scale = amax / 127 for symmetric INT8); the others are
    summaries of the values seen (``nonfinite`` counts NaN/Inf values skipped under
    ``nan_policy="skip"``). ``None`` means unknown (e.g. imported from a TensorRT cache).
    """

    amax: float
    min: float | None = None
    max: float | None = None
    absmax: float | None = None
    mean_abs: float | None = None
    zero_fraction: float | None = None
    count: int | None = None
    nonfinite: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.amax) and self.amax > 0):
            raise UsageError(f"amax must be a finite positive number, got {self.amax}")
        if not _FLOAT32_TINY <= self.amax / 127.0 <= _FLOAT32_MAX:
            raise UsageError(f"amax {self.amax:g} gives the scale {self.amax / 127.0:g}, outside float32's normal "
                             f"range [{_FLOAT32_TINY:g}, {_FLOAT32_MAX:g}]; recalibrate (a near-zero amax means a "
                             "constant tensor)")

    @property
    def non_negative(self) -> bool | None:
        """Whether every value seen was >= 0 (lets an encoding use the unsigned range)."""
        return None if self.min is None else self.min >= 0

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class ScaleTable:
    model_sha256: str
    method: str
    params: dict[str, Any]
    num_samples: int
    tensors: dict[str, TensorStats] = field(default_factory=dict)

    def amax(self, name: str) -> float:
        stats = self.tensors.get(name)
        if stats is None:
            raise UsageError(f"the scale table has no tensor {name!r} (it has {len(self.tensors)} tensors; "
                             f"recalibrate, with --all-tensors if the tensor is not a usual Q/DQ target)")
        return stats.amax

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "model_sha256": self.model_sha256,
            "method": self.method,
            "params": self.params,
            "num_samples": self.num_samples,
            "tensors": {name: stats.to_json() for name, stats in self.tensors.items()},
        }

    @property
    def table_id(self) -> str:
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return sha256_bytes(canonical.encode())

    def save(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_json(path, self.to_json())

    @classmethod
    def from_json(cls, data: Any, origin: str = "scale table") -> "ScaleTable":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UsageError(f"{origin} is not a trtopt scale table (no \"format\": \"{FORMAT}\")")
        if data.get("version") != VERSION:
            raise UsageError(f"{origin} has scale table version {data.get('version')}, this trtopt reads {VERSION}")
        if not isinstance(data.get("tensors"), dict) or not all(isinstance(v, dict) for v in data["tensors"].values()):
            raise UsageError(f"{origin}: \"tensors\" must map tensor names to {{\"amax\": ...}} objects")
        try:
            tensors = {name: TensorStats(**stats) for name, stats in data["tensors"].items()}
            return cls(str(data["model_sha256"]), str(data["method"]), dict(data["params"]),
                       int(data["num_samples"]), tensors)
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{origin} is malformed: {exc}") from exc
        except UsageError as exc:
            raise UsageError(f"{origin}: {exc}") from exc

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "ScaleTable":
        return cls.from_json(read_json(path, "scale table"), f"scale table {path}")

    def ensure_matches(self, model: str | os.PathLike[str], force: bool = False) -> None:
        """Refuse the table for a model whose bytes differ from the ones it was computed on.

        ``model`` is an ONNX path or a sha256 hex digest. With ``force`` a mismatch is accepted
        (the user says the weights did not change in a way that matters).
        """
        text = os.fspath(model)
        is_digest = len(text) == 64 and all(c in "0123456789abcdef" for c in text.lower()) and not Path(text).exists()
        digest = text.lower() if is_digest else sha256_file(text) if Path(text).is_file() else None
        if digest is None:
            raise UsageError(f"ONNX model not found: {text}")
        if digest != self.model_sha256 and not force:
            what = "model" if is_digest else f"model {text}"
            raise UsageError(f"the scale table was computed on a model with sha256 {self.model_sha256}, but the "
                             f"{what} has sha256 {digest}; recalibrate, or pass --force to use it anyway")
