"""Core tensor types every layer shares: I/O tensor metadata, shape profiles and feed checks.

They sit below data sources, shape rules, quantization and the backends so that all of them
describe tensors the same way without importing one another (a data source needs ``TensorInfo``
but must not pull in an inference backend). torch-, onnx- and backend-free: numpy only.
``validate_feed``/``check_tensor`` live here so every runner rejects a bad feed with the same
message, naming the tensor and what was expected.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trtopt.errors import UsageError

Dim = int | str | None  # int: fixed; str: symbolic name (e.g. "batch"); None: unknown/dynamic
PROFILE_ROLES = ("min", "opt", "max")


@dataclass(frozen=True)
class TensorInfo:
    """Name, numpy dtype and shape of one I/O tensor. Dynamic dims are str (symbol) or None."""

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...]
    # Per-dimension inclusive (min, max) bounds from a build profile; None where unbounded.
    bounds: tuple[tuple[int, int] | None, ...] | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": np.dtype(self.dtype).name, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorInfo:
        return cls(name=data["name"], dtype=np.dtype(data["dtype"]), shape=tuple(data["shape"]))

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def describe(self) -> str:
        dims = "x".join(str(d) if isinstance(d, int) else (d or "?") for d in self.shape)
        return f"{self.name}: {np.dtype(self.dtype).name}[{dims}]"


@dataclass
class ShapeProfile:
    """min/opt/max shape per input name (trtexec's --min-shapes/--opt-shapes/--max-shapes)."""

    min: dict[str, tuple[int, ...]] = field(default_factory=dict)
    opt: dict[str, tuple[int, ...]] = field(default_factory=dict)
    max: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {role: {n: list(s) for n, s in getattr(self, role).items()} for role in PROFILE_ROLES}

    @classmethod
    def from_json(cls, data: Mapping[str, Mapping[str, Sequence[int]]] | None) -> ShapeProfile:
        """Inverse of to_json (manifests store profiles as JSON); None gives an empty profile."""
        data = data or {}
        return cls(
            **{role: {n: tuple(int(d) for d in s) for n, s in data.get(role, {}).items()} for role in PROFILE_ROLES}
        )


def validate_feed(feed: Mapping[str, Any], inputs: Sequence[TensorInfo]) -> dict[str, np.ndarray]:
    """Check names, dtypes, ranks and fixed dims (and profile bounds) of a feed.

    Returns the feed as contiguous numpy arrays. Raises UsageError naming the tensor.
    """
    if not isinstance(feed, Mapping):
        raise UsageError(f"the feed must be a dict of input name -> array, got a {type(feed).__name__}; "
                         f"the model expects {[i.describe() for i in inputs]}")
    expected = {info.name: info for info in inputs}
    missing = [name for name in expected if name not in feed]
    unknown = [name for name in feed if name not in expected]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if unknown:
            parts.append(f"unknown input(s) {unknown}")
        raise UsageError("; ".join(parts) + f"; the model expects {[i.describe() for i in inputs]}")
    arrays: dict[str, np.ndarray] = {}
    for name, info in expected.items():
        array = np.asarray(feed[name])
        check_tensor(info, array.dtype, array.shape)
        arrays[name] = np.require(array, requirements="C")  # keeps 0-d scalars 0-d (ascontiguousarray does not)
    return arrays


def check_tensor(info: TensorInfo, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """Check one input's dtype, rank, fixed dims and profile bounds (also used for device arrays,
    which must not be turned into numpy arrays just to be validated)."""
    name = info.name
    if dtype != info.dtype:
        raise UsageError(f"input {name!r}: dtype {dtype} given, expected {np.dtype(info.dtype).name}")
    if len(shape) != len(info.shape):
        raise UsageError(f"input {name!r}: rank {len(shape)} (shape {list(shape)}) given, "
                         f"expected rank {len(info.shape)} ({info.describe()})")
    for axis, (got, want) in enumerate(zip(shape, info.shape)):
        if isinstance(want, int) and want >= 0 and got != want:
            raise UsageError(f"input {name!r}: dimension {axis} is {got}, expected {want} ({info.describe()})")
        bound = info.bounds[axis] if info.bounds else None
        if bound is not None and not bound[0] <= got <= bound[1]:
            raise UsageError(f"input {name!r}: dimension {axis} is {got}, outside the built profile "
                             f"[{bound[0]}, {bound[1]}]; rebuild with wider --min-shapes/--max-shapes")
