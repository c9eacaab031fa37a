"""CUDA streams and events (owned handles, destroyed once).

Each TensorRT execution context gets its own non-blocking stream: work never lands on the legacy
default stream, which would serialize every context and every library sharing the process.
"""
from __future__ import annotations

from typing import Any

from trtopt.cuda.api import call, cudart, handle_int


class Stream:
    """A non-blocking CUDA stream. ``handle`` is the cuda-python object, ``ptr`` its integer value
    (what TensorRT's ``execute_async_v3`` and DLPack producers take)."""

    def __init__(self) -> None:
        self.handle: Any = call("cudaStreamCreateWithFlags", cudart().cudaStreamNonBlocking)

    @property
    def ptr(self) -> int:
        return handle_int(self.handle)

    def synchronize(self) -> None:
        call("cudaStreamSynchronize", self.handle)

    def wait(self, event: "Event") -> None:
        """Make later work on this stream wait for `event` (no host blocking)."""
        call("cudaStreamWaitEvent", self.handle, event.handle, 0)

    def wait_for_stream(self, other: Any) -> None:
        """Order this stream after the work queued so far on `other` (a handle or an int)."""
        event = Event()
        try:
            event.record(other)
            self.wait(event)
        finally:
            event.close()

    def close(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            call("cudaStreamDestroy", handle)

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Event:
    """A CUDA event without timing (cheaper); used to order one stream after another."""

    def __init__(self) -> None:
        self.handle: Any = call("cudaEventCreateWithFlags", cudart().cudaEventDisableTiming)

    def record(self, stream: Any) -> None:
        handle = stream.handle if isinstance(stream, Stream) else stream
        call("cudaEventRecord", self.handle, handle)

    def synchronize(self) -> None:
        call("cudaEventSynchronize", self.handle)

    def close(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            call("cudaEventDestroy", handle)
