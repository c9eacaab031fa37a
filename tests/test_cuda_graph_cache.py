"""CPU tests for the CUDA-graph rules: graphs keyed by (shapes, addresses), one plain enqueue after
every shape change before a capture or a replay, a bounded cache that closes what it drops, and a
failed capture that still runs the work. Captured graphs need a GPU: a recording stand-in takes
their place here (tests/test_cuda_gpu.py captures real ones)."""
from __future__ import annotations

import pytest

from trtopt.cuda.graph import GraphCache, GraphKey, GraphStep, run_graphed
from trtopt.errors import TrtoptError


class _Graph:
    """Records launches and whether the cache closed it."""

    def __init__(self, log: list[str], label: str) -> None:
        self.log, self.label, self.closed = log, label, False

    def launch(self, stream: object) -> None:
        self.log.append(f"replay {self.label}")

    def close(self) -> None:
        self.closed = True


def _key(batch: int, address: int = 0x1000) -> GraphKey:
    return GraphKey(((batch, 3, 16, 16),), (address, address + 0x100000))


class _Run:
    """Drives run_graphed for one execution context and records what reached the stream."""

    def __init__(self, capacity: int = 16, fail_capture: bool = False) -> None:
        self.cache = GraphCache(capacity)
        self.log: list[str] = []
        self.fail_capture = fail_capture
        self.batch = 0

    def _capture(self, stream: object, enqueue) -> _Graph:
        if self.fail_capture:
            raise TrtoptError("capture refused")
        self.log.append(f"capture {self.batch}")
        return _Graph(self.log, str(self.batch))

    def call(self, batch: int, address: int = 0x1000) -> TrtoptError | None:
        self.batch = batch
        return run_graphed(self.cache, _key(batch, address), "stream", lambda: self.log.append(f"enqueue {batch}"),
                           capture=self._capture)


def test_alternating_batches_never_replay_across_a_shape_change() -> None:
    run = _Run()
    for batch in (1, 1, 1, 4, 4, 4, 1, 4, 1, 1):
        assert run.call(batch) is None
    assert run.log == ["enqueue 1", "capture 1", "replay 1", "replay 1", "enqueue 4", "capture 4", "replay 4",
                       "replay 4", "enqueue 1", "enqueue 4", "enqueue 1", "replay 1"]
    assert len(run.cache) == 2


def test_new_addresses_capture_a_new_graph() -> None:
    run = _Run()
    for address in (0x1000, 0x1000, 0x9000, 0x9000):
        run.call(2, address)
    assert run.log == ["enqueue 2", "capture 2", "replay 2", "capture 2", "replay 2", "replay 2"]


def test_failed_capture_still_runs_the_work() -> None:
    run = _Run(fail_capture=True)
    assert run.call(3) is None
    failure = run.call(3)
    assert isinstance(failure, TrtoptError) and run.log == ["enqueue 3", "enqueue 3"]


def test_cache_is_bounded_and_closes_evicted_and_cleared_graphs() -> None:
    cache = GraphCache(capacity=2)
    log: list[str] = []
    graphs = [_Graph(log, str(i)) for i in range(3)]
    for address, graph in zip((0x1000, 0x2000, 0x3000), graphs):
        cache.add(_key(1, address), graph)
    assert graphs[0].closed and not graphs[1].closed and len(cache) == 2
    cache.get(_key(1, 0x2000))  # used: now the most recent
    cache.add(_key(1, 0x4000), _Graph(log, "3"))
    assert graphs[2].closed and not graphs[1].closed
    cache.ran(_key(1, 0x2000))
    assert cache.step(_key(1, 0x2000)) is GraphStep.REPLAY
    cache.clear()
    assert graphs[1].closed and len(cache) == 0
    assert cache.step(_key(1, 0x2000)) is GraphStep.ENQUEUE  # cleared: shapes forgotten too
    with pytest.raises(ValueError):
        GraphCache(capacity=0)
