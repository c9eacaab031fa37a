"""The CUDA layer with PyTorch CUDA tensors on a real GPU (cuda-python + a CUDA build of PyTorch, no
TensorRT): zero-copy views, a misaligned input, and the producer race. Skipped, with the reason,
elsewhere."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.cuda  # skipped without a GPU by conftest, with the reason


@pytest.fixture(scope="module")
def torch():
    module = pytest.importorskip("torch", reason="needs PyTorch (a CUDA build)")
    if not module.cuda.is_available():
        pytest.skip(f"PyTorch {module.__version__} here has no CUDA (install a CUDA build of torch)")
    return module


def test_torch_cuda_tensor_is_seen_without_copy(torch) -> None:
    from trtopt.cuda.interop import DeviceArray, device_view

    tensor = torch.arange(12, dtype=torch.float32, device="cuda").reshape(3, 4)
    view = device_view(tensor, stream=None)
    assert view is not None and view.ptr == tensor.data_ptr() and view.shape == (3, 4)
    wrapped = torch.as_tensor(DeviceArray.from_host(np.ones((2, 2), np.float32)), device="cuda")
    assert float(wrapped.sum()) == 4.0


def test_misaligned_torch_input_goes_through_an_aligned_buffer(torch) -> None:
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
def test_producer_race_is_ordered(torch, protocol: str) -> None:
    """A long torch kernel is still writing the input when our stream reads it: the ordering rule
    must make the read see the written values (compared with the tensor after synchronizing)."""
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
