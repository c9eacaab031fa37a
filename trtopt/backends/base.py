"""The Runner contract every backend implements (a template method around the backend's ``_infer``).

Serving code holds a Runner: ``runner.inputs`` / ``runner.outputs`` describe the tensors,
``runner.infer({"input": batch})`` returns ``{name: np.ndarray}``. ``infer()`` is written once,
here: it checks the feed against ``inputs`` (the shared :func:`trtopt.tensors.validate_feed`, so
every backend rejects a bad feed with the same message) and only then calls the backend's
``_infer()``. What callers may ask of any runner (``notes``, ``device_memory_bytes``) is a property
of this class with a default, so nobody probes a runner with ``getattr``.
"""
from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import numpy as np

from trtopt.errors import UsageError
from trtopt.tensors import TensorInfo, validate_feed


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
    _notes: tuple[str, ...] = ()

    @property
    def inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorInfo]:
        return list(self._outputs)

    @property
    def notes(self) -> list[str]:
        """What a reader of this runner's results should know (e.g. a fallback it took while loading)."""
        return list(self._notes)

    @property
    def device_memory_bytes(self) -> int | None:
        """Accelerator memory the loaded engine holds (0 after close()); None for runners that use host memory
        only."""
        return None

    @property
    def closed(self) -> bool:
        """True after close(); backends say how they know (their session or engine is released)."""
        return False

    def infer(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run one batch; feed maps every input name to an array. Checked before the backend sees it."""
        self._ensure_open()
        return self._infer(self._checked_feed(feed))

    def _ensure_open(self) -> None:
        """Using a closed runner is the caller's mistake: a usage error, not a failure inside the backend."""
        if self.closed:
            raise UsageError(f"this {self.backend} runner is closed; load the engine again (trtopt.load) to run it")

    def _checked_feed(self, feed: Mapping[str, Any]) -> Mapping[str, Any]:
        """The feed as contiguous numpy arrays, or UsageError naming the tensor. Backends that also
        take other array kinds (CUDA device arrays) override this to check those without copying."""
        return validate_feed(feed, self._inputs)

    @abc.abstractmethod
    def _infer(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run one already-checked batch."""

    def _add_note(self, note: str) -> None:
        self._notes = (*self._notes, note)

    def close(self) -> None:
        """Release backend resources. Idempotent."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
