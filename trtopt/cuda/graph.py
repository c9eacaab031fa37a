"""CUDA graph capture and replay.

For a fixed shape, replaying a captured graph replaces the per-call launch work of every kernel
with one launch (trtexec turns this on by default since TensorRT 11). Capture records device
addresses, so the graph is only valid while the same buffers are used: callers key graphs by
shapes and addresses and recapture when either changes.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trtopt.cuda.api import CudaError, call, cudart
from trtopt.cuda.stream import Stream


class CudaGraph:
    """An instantiated graph captured from the work `enqueue` puts on `stream`."""

    def __init__(self, stream: Stream, enqueue: Callable[[], None]) -> None:
        self._graph: Any = None
        self._exec: Any = None
        mode = cudart().cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        call("cudaStreamBeginCapture", stream.handle, mode)
        try:
            enqueue()
        except BaseException:
            try:  # end the capture so the stream is usable again; the partial graph is discarded
                graph = call("cudaStreamEndCapture", stream.handle)
                if graph is not None:
                    call("cudaGraphDestroy", graph)
            except CudaError:
                pass
            raise
        self._graph = call("cudaStreamEndCapture", stream.handle)
        self._exec = call("cudaGraphInstantiate", self._graph, 0)

    def launch(self, stream: Stream) -> None:
        call("cudaGraphLaunch", self._exec, stream.handle)

    def close(self) -> None:
        if self._exec is not None:
            exec_, self._exec = self._exec, None
            call("cudaGraphExecDestroy", exec_)
        if self._graph is not None:
            graph, self._graph = self._graph, None
            call("cudaGraphDestroy", graph)
