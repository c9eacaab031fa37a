"""CPU tests for the CUDA layer's pure parts: array-interface and DLPack parsing, producer-stream
ordering rules, alignment, error checking, buffer growth, and the device probe without a GPU."""
from __future__ import annotations

import numpy as np
import pytest

from trtopt.cuda import api
from trtopt.cuda.device import probe_devices
from trtopt.cuda.interop import (KDL_CPU, KDL_CUDA, LEGACY_DEFAULT_STREAM, choose_protocol, device_view,
                                 parse_cuda_array_interface, parse_dlpack_capsule, producer_stream, resolve_raw_dtype,
                                 typestr)
from trtopt.cuda.memory import IO_ALIGNMENT, _grown, is_aligned
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
    assert (view.ptr, view.shape, view.dtype, view.wait_stream, view.nbytes) == (
        0x7F0000001000,
        (2, 3),
        np.float32,
        1,
        24,
    )
    assert parse_cuda_array_interface(_cai(strides=(12, 4))).shape == (2, 3)  # explicit C strides are fine
    assert parse_cuda_array_interface(_cai(stream=None)).wait_stream is None


def test_producer_stream_rules() -> None:
    assert producer_stream(_cai(stream=0x55AA00)) == 0x55AA00  # v3: wait on the producer's own stream
    assert producer_stream(_cai(stream=2)) == 2  # per-thread default stream
    assert producer_stream(_cai(stream=None)) is None  # v3: the producer says no sync is needed
    legacy = _cai()
    del legacy["stream"]
    legacy["version"] = 2  # PyTorch's interface: no stream key -> the legacy default stream
    assert producer_stream(legacy) == LEGACY_DEFAULT_STREAM == 1
    with pytest.raises(UsageError, match="stream 0 is not allowed"):
        producer_stream(_cai(stream=0), "input 'x'")
    with pytest.raises(UsageError, match="integer or None"):
        producer_stream(_cai(stream="1"))


def test_protocol_choice() -> None:
    v3, v2 = _cai(), {k: v for k, v in _cai().items() if k != "stream"}
    assert choose_protocol(v3, KDL_CUDA) == "cai"  # the producer stated its stream: honour it
    assert choose_protocol(v2, KDL_CUDA) == "dlpack"  # PyTorch: DLPack's stream handshake beats a guess
    assert choose_protocol(v2, None) == "cai"  # no DLPack: legacy-default-stream dependency
    assert choose_protocol(None, KDL_CUDA) == "dlpack"  # e.g. a bfloat16 torch tensor (no typestr)
    assert choose_protocol(None, KDL_CPU) is None and choose_protocol(None, None) is None


def test_alignment_rule() -> None:
    assert IO_ALIGNMENT == 256
    assert is_aligned(0x7F0000000000) and is_aligned(0)
    assert not is_aligned(0x7F0000000004) and not is_aligned(0x7F0000000080)


def test_raw_bytes_round_trip_bf16_and_fp8() -> None:
    import ml_dtypes

    for special in (ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn):
        wire = np.dtype(typestr(special))  # what DeviceArray puts in its interface
        assert wire.kind == "V" and resolve_raw_dtype(wire, special) == np.dtype(special)
    assert resolve_raw_dtype(np.dtype("V2"), np.float16) == np.dtype("V2")  # fp16 has a typestr: no guessing
    assert resolve_raw_dtype(np.dtype("V4"), ml_dtypes.bfloat16) == np.dtype("V4")  # width differs
    assert resolve_raw_dtype(np.dtype(np.float32), np.float32) == np.float32


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


def test_device_view_uses_a_stated_stream() -> None:
    producer = _ProducerArray()
    view = device_view(producer, stream=5)
    assert view is not None and view.dtype == np.float16 and view.keepalive is producer
    assert view.wait_stream == 1


class _TorchBf16Like:
    """Raises TypeError from the interface as PyTorch does for bfloat16, and speaks DLPack (on the CPU
    here, so the host path must take it)."""

    def __init__(self) -> None:
        self._array = np.zeros(3, np.float32)

    @property
    def __cuda_array_interface__(self) -> dict:
        raise TypeError("dtype bfloat16 is not supported by __cuda_array_interface__")

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._array.__dlpack_device__()

    def __dlpack__(self, stream=None):
        return self._array.__dlpack__(stream=stream)


def test_interface_type_error_falls_back_to_dlpack() -> None:
    assert device_view(_TorchBf16Like(), stream=7) is None  # no crash: DLPack decides (CPU -> host path)


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


def test_dlpack_bf16_and_fp8_from_torch_capsules() -> None:
    torch = pytest.importorskip("torch")
    import ml_dtypes

    for torch_type, numpy_type in ((torch.bfloat16, ml_dtypes.bfloat16), (torch.float8_e4m3fn, ml_dtypes.float8_e4m3fn),
                                   (torch.float8_e5m2, ml_dtypes.float8_e5m2), (torch.bool, np.bool_)):
        tensor = torch.zeros(2, 3, dtype=torch_type)
        view, device_type = parse_dlpack_capsule(tensor.__dlpack__())
        assert (view.dtype, view.shape, view.ptr, device_type) == (
            np.dtype(numpy_type),
            (2, 3),
            tensor.data_ptr(),
            KDL_CPU,
        )
