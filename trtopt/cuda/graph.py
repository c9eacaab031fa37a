"""CUDA graph capture and replay, and the rule for when a captured graph may be replayed.

For a fixed shape, replaying a captured graph replaces the per-call launch work of every kernel
with one launch (trtexec turns this on by default since TensorRT 11). A graph bakes in the device
addresses and kernel parameters of the work it recorded, so it is valid only for the shapes and
addresses it was captured with: :class:`GraphCache` keys graphs by both. TensorRT also does
shape-dependent setup inside the first enqueue after input shapes change (NVIDIA's developer guide
asks for one plain ``enqueueV3`` after a shape change before capturing), so after a shape switch
the cache answers "enqueue" once before it captures or replays. The decisions are pure and
CPU-tested; :class:`CudaGraph` is the cuda-python part.
"""
from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from trtopt.cuda.api import CudaError, call, cudart
from trtopt.cuda.stream import Stream
from trtopt.errors import TrtoptError


@dataclass(frozen=True)
class GraphKey:
    """What a captured graph depends on: every input shape and every bound I/O address."""

    shapes: tuple[tuple[int, ...], ...]
    addresses: tuple[int, ...]


class GraphStep(enum.Enum):
    ENQUEUE = "enqueue"  # plain enqueue: shapes changed since the last run
    CAPTURE = "capture"  # same shapes, no graph yet: capture one, then launch it
    REPLAY = "replay"  # same shapes, graph captured for these addresses: launch it


class _Graph(Protocol):
    def launch(self, stream: Stream) -> None: ...

    def close(self) -> None: ...


class GraphCache:
    """Captured graphs of one execution context by :class:`GraphKey`, least recently used first.

    Not thread-safe: one execution context is used by one thread at a time.
    """

    def __init__(self, capacity: int = 16) -> None:
        if capacity < 1:
            raise ValueError(f"graph cache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._graphs: OrderedDict[GraphKey, _Graph] = OrderedDict()
        self._last_shapes: tuple[tuple[int, ...], ...] | None = None

    def __len__(self) -> int:
        return len(self._graphs)

    def step(self, key: GraphKey) -> GraphStep:
        """What to do for a call with `key` (see the module doc)."""
        if key.shapes != self._last_shapes:
            return GraphStep.ENQUEUE
        return GraphStep.REPLAY if key in self._graphs else GraphStep.CAPTURE

    def ran(self, key: GraphKey) -> None:
        """Record that the context executed with `key`'s shapes (by any step)."""
        self._last_shapes = key.shapes

    def get(self, key: GraphKey) -> _Graph:
        self._graphs.move_to_end(key)
        return self._graphs[key]

    def add(self, key: GraphKey, graph: _Graph) -> None:
        """Keep `graph`; the least recently used one is closed when the cache is full."""
        self._graphs[key] = graph
        self._graphs.move_to_end(key)
        while len(self._graphs) > self.capacity:
            _key, oldest = self._graphs.popitem(last=False)
            oldest.close()

    def clear(self) -> None:
        """Close every graph (and forget the shapes: the next call enqueues)."""
        graphs = list(self._graphs.values())
        self._graphs.clear()
        self._last_shapes = None
        for graph in graphs:
            graph.close()


class CudaGraph:
    """An instantiated graph captured from the work `enqueue` puts on `stream`.

    A failed capture leaves nothing behind: the capture is ended, a partial graph destroyed, and the
    error CUDA recorded for the failed capture cleared (``cudaGetLastError``), so the stream and
    later calls work normally; the original error is raised.
    """

    def __init__(self, stream: Stream, enqueue: Callable[[], None]) -> None:
        self._graph: Any = None
        self._exec: Any = None
        mode = cudart().cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        call("cudaStreamBeginCapture", stream.handle, mode)
        try:
            try:
                enqueue()
            finally:
                self._graph = call("cudaStreamEndCapture", stream.handle)  # always end the capture
            self._exec = call("cudaGraphInstantiate", self._graph, 0)
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        try:
            self.close()
        except CudaError:
            pass
        cudart().cudaGetLastError()  # clear the error the failed capture left (result deliberately unchecked)

    def launch(self, stream: Stream) -> None:
        call("cudaGraphLaunch", self._exec, stream.handle)

    def close(self) -> None:
        if self._exec is not None:
            exec_, self._exec = self._exec, None
            call("cudaGraphExecDestroy", exec_)
        if self._graph is not None:
            graph, self._graph = self._graph, None
            call("cudaGraphDestroy", graph)


def run_graphed(cache: GraphCache, key: GraphKey, stream: Stream, enqueue: Callable[[], None],
                capture: Callable[[Stream, Callable[[], None]], Any] = CudaGraph) -> TrtoptError | None:
    """Put the work of `enqueue` for `key` on `stream` as `cache` decides: a plain enqueue, a capture
    (``capture(stream, enqueue)``) then a launch, or a replay. A failed capture is returned (the
    work then ran plainly, so the call still produces its result); the caller should stop using
    graphs."""
    step = cache.step(key)
    if step is GraphStep.REPLAY:
        cache.get(key).launch(stream)
    elif step is GraphStep.CAPTURE:
        try:
            graph = capture(stream, enqueue)
        except TrtoptError as exc:
            enqueue()
            return exc
        cache.add(key, graph)
        graph.launch(stream)
    else:
        enqueue()
    cache.ran(key)
    return None
