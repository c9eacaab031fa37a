"""CPU tests for the CUDA-graph rules: graphs keyed by (shapes, addresses), one plain enqueue after
every shape change before a capture or a replay, and a bounded cache that closes what it drops."""
from __future__ import annotations

import pytest

from trtopt.cuda.graph import GraphCache, GraphKey, GraphStep


class _Graph:
    """Records whether the cache closed it (stands for a captured graph, which needs a GPU)."""

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def _key(batch: int, address: int = 0x1000) -> GraphKey:
    return GraphKey(((batch, 3, 16, 16),), (address, address + 0x100000))


def _drive(cache: GraphCache, key: GraphKey) -> GraphStep:
    """What the runner does with each answer (capture stores a graph), then records the run."""
    step = cache.step(key)
    if step is GraphStep.CAPTURE:
        cache.add(key, _Graph())
    cache.ran(key)
    return step


def test_alternating_batches_never_replay_across_a_shape_change() -> None:
    cache = GraphCache()
    steps = [_drive(cache, _key(b)) for b in (1, 1, 1, 4, 4, 4, 1, 4, 1, 1)]
    E, C, R = GraphStep.ENQUEUE, GraphStep.CAPTURE, GraphStep.REPLAY
    assert steps == [E, C, R, E, C, R, E, E, E, R]  # after 4 -> 1 the batch-1 graph waits for one enqueue
    assert len(cache) == 2


def test_new_addresses_capture_a_new_graph() -> None:
    cache = GraphCache()
    assert [_drive(cache, _key(2, a)) for a in (0x1000, 0x1000, 0x1000, 0x9000, 0x9000)] == [
        GraphStep.ENQUEUE, GraphStep.CAPTURE, GraphStep.REPLAY, GraphStep.CAPTURE, GraphStep.REPLAY]


def test_cache_is_bounded_and_closes_evicted_and_cleared_graphs() -> None:
    cache = GraphCache(capacity=2)
    graphs = [_Graph() for _ in range(3)]
    for address, graph in zip((0x1000, 0x2000, 0x3000), graphs):
        cache.add(_key(1, address), graph)
    assert graphs[0].closed and not graphs[1].closed and len(cache) == 2
    cache.get(_key(1, 0x2000))  # used: now the most recent
    cache.add(_key(1, 0x4000), _Graph())
    assert graphs[2].closed and not graphs[1].closed
    cache.ran(_key(1, 0x2000))
    cache.clear()
    assert graphs[1].closed and len(cache) == 0
    assert cache.step(_key(1, 0x2000)) is GraphStep.ENQUEUE  # cleared: shapes forgotten too
    with pytest.raises(ValueError):
        GraphCache(capacity=0)
