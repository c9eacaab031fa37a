"""The CUDA layer on a real GPU (cuda-python only, no TensorRT). Skipped, with the reason, elsewhere."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.cuda  # skipped without a GPU by conftest, with the reason


def _upload(array: np.ndarray):
    from trtopt.cuda.interop import DeviceArray

    return DeviceArray.from_host(array)


def test_device_info() -> None:
    from trtopt.cuda.device import device_info

    info = device_info(0)
    assert info.name and info.total_memory > 0
    assert int(info.compute_capability.split(".")[0]) >= 5


def test_round_trip_and_growth() -> None:
    from trtopt.cuda.memory import BufferPool, DeviceBuffer

    data = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    assert np.array_equal(_upload(data).to_host(), data)
    pool = BufferPool(DeviceBuffer)
    first = pool.get("x", 100)
    ptr, capacity = first.ptr, first.capacity
    assert pool.get("x", 50).ptr == ptr  # reused
    assert pool.get("x", capacity + 1).capacity > capacity  # grown
    pool.close()
    assert pool.total_bytes == 0


def test_stream_ordering_and_dtod_copy() -> None:
    from trtopt.cuda.interop import DeviceArray
    from trtopt.cuda.memory import copy_dtod_async
    from trtopt.cuda.stream import Stream

    data = np.arange(1 << 16, dtype=np.int32)
    source = _upload(data)
    target = DeviceArray(data.shape, data.dtype)
    with Stream() as first, Stream() as second:
        copy_dtod_async(target.ptr, source.ptr, data.nbytes, first.handle)
        second.wait_for_stream(first.handle)
        second.synchronize()
        first.synchronize()
    assert np.array_equal(target.to_host(), data)


def test_cuda_graph_replays_captured_copy() -> None:
    from trtopt.cuda.graph import CudaGraph
    from trtopt.cuda.interop import DeviceArray
    from trtopt.cuda.memory import copy_dtod_async
    from trtopt.cuda.stream import Stream

    data = np.arange(1024, dtype=np.float32)
    source = _upload(data)
    target = DeviceArray(data.shape, data.dtype)
    with Stream() as stream:
        graph = CudaGraph(stream, lambda: copy_dtod_async(target.ptr, source.ptr, data.nbytes, stream.handle))
        graph.launch(stream)
        stream.synchronize()
        graph.close()
    assert np.array_equal(target.to_host(), data)


def test_graph_replay_alternating_batches_matches_plain_run() -> None:
    """The runner's graph rule (trtopt.cuda.graph.run_graphed) on real captured graphs: batch 1/4
    alternating, each result compared with the same work enqueued plainly."""
    from trtopt.cuda.api import call
    from trtopt.cuda.graph import GraphCache, GraphKey, run_graphed
    from trtopt.cuda.interop import DeviceArray
    from trtopt.cuda.memory import copy_dtod_async
    from trtopt.cuda.stream import Stream

    rows, width = 4, 4096
    source = _upload(np.arange(1, rows * width + 1, dtype=np.float32).reshape(rows, width))
    graphed, plain = DeviceArray((rows, width), np.float32), DeviceArray((rows, width), np.float32)
    cache = GraphCache()
    with Stream() as stream:
        def work(batch: int, target: DeviceArray) -> None:  # shape-dependent work: clear, then copy `batch` rows
            call("cudaMemsetAsync", target.ptr, 0, target.nbytes, stream.handle)
            copy_dtod_async(target.ptr, source.ptr, batch * width * 4, stream.handle)

        for batch in (1, 4, 1, 4, 1, 1, 4, 4):
            key = GraphKey(((batch, width),), (source.ptr, graphed.ptr))
            assert run_graphed(cache, key, stream, lambda: work(batch, graphed)) is None
            work(batch, plain)
            stream.synchronize()
            got, want = graphed.to_host(), plain.to_host()
            np.testing.assert_array_equal(got, want)
            assert np.all(got[:batch] > 0) and not np.any(got[batch:])
        assert len(cache) == 2  # one graph per batch size
        cache.clear()
