"""What a model expects as input, readable without torch.

Calibration, build and bench stages need the input name, shape and normalization of a model but
run on machines where torch is not installed, so this module stays numpy/stdlib-only.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trtopt.errors import UsageError


@dataclass(frozen=True)
class InputSpec:
    """One input tensor: name, per-sample shape (C, H, W; no batch axis), dtype, normalization.

    ``mean``/``std`` are per channel (or one value for all channels) and describe how raw pixel
    values in [0, 1] were normalized before they reached the network, so a data source can prepare
    calibration images exactly like the training data.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if any(int(d) <= 0 for d in self.shape):
            raise UsageError(f"input {self.name!r}: shape {self.shape} must have positive dimensions")
        if len(self.mean) != len(self.std):
            raise UsageError(f"input {self.name!r}: mean has {len(self.mean)} values but std has {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise UsageError(f"input {self.name!r}: std {self.std} must be positive")

    @property
    def channels(self) -> int:
        return int(self.shape[0])

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "InputSpec":
        try:
            return cls(name=str(data["name"]), shape=tuple(int(d) for d in data["shape"]),
                       dtype=str(data.get("dtype", "float32")),
                       mean=tuple(float(v) for v in data.get("mean", (0.0,))),
                       std=tuple(float(v) for v in data.get("std", (1.0,))))
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"malformed input spec {dict(data)!r}: {exc}") from exc

    def with_normalization(self, mean: tuple[float, ...], std: tuple[float, ...]) -> "InputSpec":
        """The same input with the normalization of the data the model was actually trained on."""
        return InputSpec(self.name, self.shape, self.dtype, tuple(mean), tuple(std))
