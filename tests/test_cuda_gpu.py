"""The CUDA layer on a real GPU (cuda-python only, no TensorRT). Skipped, with the reason, elsewhere."""
from __future__ import annotations

import numpy as np
import pytest

from trtopt.cuda.device import probe_devices

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module", autouse=True)
def _need_gpu() -> None:
    count, why = probe_devices()
    if not count:
        pytest.skip(f"needs cuda-python and a CUDA GPU: {why}")


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


def test_torch_cuda_tensor_is_seen_without_copy() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch here has no CUDA")
    from trtopt.cuda.interop import device_view

    tensor = torch.arange(12, dtype=torch.float32, device="cuda").reshape(3, 4)
    view = device_view(tensor, stream=None)
    assert view is not None and view.ptr == tensor.data_ptr() and view.shape == (3, 4)
    wrapped = torch.as_tensor(_upload(np.ones((2, 2), np.float32)), device="cuda")
    assert float(wrapped.sum()) == 4.0


def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip(f"PyTorch {torch.__version__} here has no CUDA (install a CUDA build of torch)")
    return torch


def test_graph_replay_alternating_batches_matches_plain_run() -> None:
    """The runner's graph rule (trtopt.cuda.graph.run_graphed) on real captured graphs: batch 1/4
    alternating, each result compared with the same work enqueued plainly."""
    torch = _torch_cuda()
    from trtopt.cuda.api import call
    from trtopt.cuda.graph import GraphCache, GraphKey, run_graphed
    from trtopt.cuda.interop import DeviceArray
    from trtopt.cuda.memory import copy_dtod_async
    from trtopt.cuda.stream import Stream

    rows, width = 4, 4096
    source = torch.arange(rows * width, dtype=torch.float32, device="cuda").reshape(rows, width) + 1
    torch.cuda.synchronize()
    graphed, plain = DeviceArray((rows, width), np.float32), DeviceArray((rows, width), np.float32)
    cache = GraphCache()
    with Stream() as stream:
        def work(batch: int, target: DeviceArray) -> None:  # shape-dependent work: clear, then copy `batch` rows
            call("cudaMemsetAsync", target.ptr, 0, target.nbytes, stream.handle)
            copy_dtod_async(target.ptr, source.data_ptr(), batch * width * 4, stream.handle)

        for batch in (1, 4, 1, 4, 1, 1, 4, 4):
            key = GraphKey(((batch, width),), (source.data_ptr(), graphed.ptr))
            assert run_graphed(cache, key, stream, lambda: work(batch, graphed)) is None
            work(batch, plain)
            stream.synchronize()
            got, want = graphed.to_host(), plain.to_host()
            np.testing.assert_array_equal(got, want)
            assert np.all(got[:batch] > 0) and not np.any(got[batch:])
        assert len(cache) == 2  # one graph per batch size
        cache.clear()


def test_misaligned_torch_input_goes_through_an_aligned_buffer() -> None:
    torch = _torch_cuda()
    from trtopt.backends.tensorrt.runner import needs_own_buffer
    from trtopt.cuda.interop import DeviceArray, device_view
    from trtopt.cuda.memory import DeviceBuffer, copy_dtod_async, is_aligned
    from trtopt.cuda.stream import Stream

    n = 1000
    tensor = torch.empty(n + 1, device="cuda")[1:]
    tensor.copy_(torch.arange(n, dtype=torch.float32, device="cuda"))
    with Stream() as stream:
        view = device_view(tensor, stream.ptr)
        assert view is not None and view.ptr == tensor.data_ptr() and view.shape == (n,)
        assert not is_aligned(view.ptr) and needs_own_buffer(view.ptr, cuda_graph=False)
        own = DeviceBuffer(view.nbytes)
        assert is_aligned(own.ptr)
        copy_dtod_async(own.ptr, view.ptr, view.nbytes, stream.handle)
        stream.synchronize()
    np.testing.assert_array_equal(DeviceArray((n,), np.float32, own).to_host(), np.arange(n, dtype=np.float32))


class _InterfaceOnly:
    """Exposes only a tensor's array interface, with the stream key removed (as PyTorch's v2
    interface has none) or set to the producer's stream (as CuPy's v3 interface does)."""

    def __init__(self, tensor, stream: int | None, state_stream: bool) -> None:
        cai = dict(tensor.__cuda_array_interface__)
        cai.pop("stream", None)
        if state_stream:
            cai["version"], cai["stream"] = 3, stream
        self.__cuda_array_interface__ = cai
        self.tensor = tensor


@pytest.mark.parametrize("protocol", ["dlpack", "interface-v2", "interface-v3-side-stream", "unordered-control"])
def test_producer_race_is_ordered(protocol: str) -> None:
    """A long torch kernel is still writing the input when our stream reads it: the ordering rule
    must make the read see the written values (compared with the tensor after synchronizing)."""
    torch = _torch_cuda()
    from trtopt.cuda.interop import DeviceArray, device_view
    from trtopt.cuda.memory import copy_dtod_async
    from trtopt.cuda.stream import Stream

    n = 1 << 20
    tensor = torch.zeros(n, device="cuda")
    torch.cuda.synchronize()
    producer = torch.cuda.Stream() if protocol == "interface-v3-side-stream" else torch.cuda.current_stream()
    with torch.cuda.stream(producer):
        torch.cuda._sleep(300_000_000)  # a long kernel (~0.2 s) ahead of the write
        tensor.fill_(7.0)
    target = DeviceArray((n,), np.float32)
    with Stream() as stream:
        if protocol == "dlpack":
            view = device_view(tensor, stream.ptr)
        elif protocol == "unordered-control":
            view = None
        else:
            wrapped = _InterfaceOnly(tensor, producer.cuda_stream, protocol.endswith("side-stream"))
            view = device_view(wrapped, stream.ptr)
        if view is not None and view.wait_stream is not None:
            stream.wait_for_stream(view.wait_stream)
        copy_dtod_async(target.ptr, tensor.data_ptr(), n * 4, stream.handle)
        stream.synchronize()
    got = target.to_host()
    torch.cuda.synchronize()
    want = tensor.cpu().numpy()
    assert np.all(want == 7.0)
    if protocol == "unordered-control":  # shows the race is real: without ordering the read comes too early
        assert not np.array_equal(got, want)
    else:
        np.testing.assert_array_equal(got, want)
