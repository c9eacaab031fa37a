"""CPU tests for the CUDA layer's pure parts: array-interface and DLPack parsing, error checking,
buffer growth, and the device probe on a machine without a GPU."""
from __future__ import annotations

import numpy as np
import pytest

from trtopt.cuda import api
from trtopt.cuda.device import probe_devices
from trtopt.cuda.interop import KDL_CPU, device_view, parse_cuda_array_interface, parse_dlpack_capsule, typestr
from trtopt.cuda.memory import _grown
from trtopt.errors import UsageError


def _cai(**overrides: object) -> dict:
    base = {
        "version": 3,
        "data": (0x7F0000001000, False),
        "shape": (2, 3),
        "typestr": "<f4",
        "strides": None,
        "stream": 1,
    }
    base.update(overrides)
    return base


def test_cuda_array_interface_parsing() -> None:
    view = parse_cuda_array_interface(_cai())
    assert (view.ptr, view.shape, view.dtype, view.stream, view.nbytes) == (0x7F0000001000, (2, 3), np.float32, 1, 24)
    assert parse_cuda_array_interface(_cai(strides=(12, 4))).shape == (2, 3)  # explicit C strides are fine
    assert parse_cuda_array_interface(_cai(stream=None)).stream is None


@pytest.mark.parametrize("overrides, fragment", [
    ({"strides": (4, 8)}, "not C-contiguous"),
    ({"mask": object()}, "masked"),
    ({"typestr": None}, "malformed"),
])
def test_cuda_array_interface_rejections(overrides: dict, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        parse_cuda_array_interface(_cai(**overrides), "input 'x'")


def test_dlpack_capsule_parsing_with_numpy() -> None:
    array = np.arange(24, dtype=np.int64).reshape(2, 3, 4)
    view, device_type = parse_dlpack_capsule(array.__dlpack__())
    assert device_type == KDL_CPU
    assert (view.ptr, view.shape, view.dtype) == (array.ctypes.data, (2, 3, 4), np.int64)
    sliced = array[1:]
    view, _ = parse_dlpack_capsule(sliced.__dlpack__())
    assert view.ptr == sliced.ctypes.data  # byte offset / data pointer honoured
    with pytest.raises(UsageError, match="not C-contiguous"):
        parse_dlpack_capsule(array[:, :, ::2].__dlpack__())


def test_host_arrays_take_the_host_path() -> None:
    assert device_view(np.zeros(3, np.float32), stream=None) is None  # numpy (DLPack device: CPU)
    assert device_view([1, 2, 3], stream=None) is None


class _ProducerArray:
    """A minimal object speaking the interface, as CuPy/Numba/PyTorch arrays do."""

    def __init__(self) -> None:
        self.__cuda_array_interface__ = _cai(typestr="<f2", shape=(4,))


def test_device_view_prefers_the_array_interface() -> None:
    producer = _ProducerArray()
    view = device_view(producer, stream=5)
    assert view is not None and view.dtype == np.float16 and view.keepalive is producer


def test_typestr() -> None:
    assert typestr(np.float32) == "<f4" and typestr(np.bool_) == "|b1" and typestr(np.int8) == "|i1"
    import ml_dtypes
    assert typestr(ml_dtypes.bfloat16) == "|V2"


def test_buffer_growth_is_geometric_and_aligned() -> None:
    assert _grown(0, 10) == 256
    assert _grown(1024, 1100) == 1536  # 1.5x the old capacity beats the exact request
    assert _grown(1024, 5000) == 5120
    assert all(_grown(c, w) % 256 == 0 and _grown(c, w) >= w for c in (0, 300, 4096) for w in (1, 777, 10_000))


def test_cuda_errors_are_raised_with_names() -> None:
    pytest.importorskip("cuda.bindings.runtime", reason="cuda-python not installed")
    runtime = api.cudart()
    no_device = runtime.cudaError_t.cudaErrorNoDevice
    with pytest.raises(api.CudaError, match=r"CUDA call cudaFake failed: cudaErrorNoDevice \("):
        api.unpack("cudaFake", (no_device, None))
    assert api.unpack("ok", (runtime.cudaError_t.cudaSuccess, 7)) == 7
    assert api.unpack("ok", (runtime.cudaError_t.cudaSuccess,)) is None


def test_probe_without_gpu_gives_a_reason() -> None:
    count, reason = probe_devices()
    if count:
        pytest.skip("a CUDA device is present here")
    assert reason and "\n" not in reason
