"""The Runner contract every backend implements, and feed validation they share.

Serving code holds a Runner: ``runner.inputs`` / ``runner.outputs`` describe the tensors,
``runner.infer({"input": batch})`` returns ``{name: np.ndarray}``. Validation lives here so every
backend rejects a bad feed with the same message, naming the tensor and what was expected.
"""
from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trtopt.errors import UsageError

Dim = int | str | None  # int: fixed; str: symbolic name (e.g. "batch"); None: unknown/dynamic


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
    def from_json(cls, data: Mapping[str, Any]) -> "TensorInfo":
        return cls(name=data["name"], dtype=np.dtype(data["dtype"]), shape=tuple(data["shape"]))

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def describe(self) -> str:
        dims = "x".join(str(d) if isinstance(d, int) else (d or "?") for d in self.shape)
        return f"{self.name}: {np.dtype(self.dtype).name}[{dims}]"


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
        arrays[name] = np.ascontiguousarray(array)
    return arrays


def check_tensor(info: TensorInfo, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """Check one input's dtype, rank, fixed dims and profile bounds (also used for device arrays,
    which must not be turned into numpy arrays just to be validated)."""
    name = info.name
    if dtype != info.dtype:
        raise UsageError(f"input {name!r}: dtype {dtype} given, expected {np.dtype(info.dtype).name}")
    if len(shape) != len(info.shape):
        raise UsageError(f"input {name!r}: rank {len(shape)} (shape {list(shape)}) given, expected rank {len(info.shape)} ({info.describe()})")
    for axis, (got, want) in enumerate(zip(shape, info.shape)):
        if isinstance(want, int) and want >= 0 and got != want:
            raise UsageError(f"input {name!r}: dimension {axis} is {got}, expected {want} ({info.describe()})")
        bound = info.bounds[axis] if info.bounds else None
        if bound is not None and not bound[0] <= got <= bound[1]:
            raise UsageError(f"input {name!r}: dimension {axis} is {got}, outside the built profile [{bound[0]}, {bound[1]}]; rebuild with wider --min-shapes/--max-shapes")


def closed_runner(backend: str) -> UsageError:
    """The error for infer() after close(): the caller's mistake, so a usage error (exit 2)."""
    return UsageError(f"this {backend} runner is closed; load the engine again (trtopt.load) to run it")


class Runner(abc.ABC):
    """One loaded engine. Use as a context manager or call close().

    Thread-safety is stated per backend in ``thread_safe``: when False, give each thread its own
    Runner (or use a pool) instead of sharing one.
    """

    backend: str = "abstract"
    thread_safe: bool = False
    # Set by each backend's constructor from the loaded engine; read through the properties below.
    _inputs: list[TensorInfo]
    _outputs: list[TensorInfo]

    @property
    def inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorInfo]:
        return list(self._outputs)

    @abc.abstractmethod
    def infer(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run one batch; feed maps every input name to an array."""

    def close(self) -> None:
        """Release backend resources. Idempotent."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
