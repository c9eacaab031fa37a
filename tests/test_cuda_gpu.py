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
