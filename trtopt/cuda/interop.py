"""Device arrays in and out without copies: ``__cuda_array_interface__`` (v3) and DLPack.

Serving code often already holds its batch on the GPU (a PyTorch CUDA tensor, a CuPy or pycuda
array). Copying it to the host and back would cost more than the inference, so the runner reads
the device pointer straight from the object. The parsing is pure (no GPU needed): the CPU tests
feed it real interface dicts and numpy's own DLPack capsules.

Ordering against the producer (the array may still be being written on another stream):

* ``__cuda_array_interface__`` with a ``stream`` key (version 3, e.g. CuPy, Numba): our stream
  waits, through an event, on that stream (1 = legacy default, 2 = per-thread default, others a
  ``cudaStream_t``); ``stream: None`` means the producer says no synchronization is needed.
* DLPack on a CUDA device (PyTorch): ``__dlpack__(stream=ours)``, where the producer itself makes
  our stream wait for its pending work (the DLPack stream handshake).
* ``__cuda_array_interface__`` without a ``stream`` key (versions 0-2, e.g. PyTorch's): the
  producer's stream is unknown; our stream waits on the legacy default stream, where such
  producers work by default. Work on any other stream must be synchronized by the caller.

:func:`choose_protocol` and :func:`producer_stream` hold these rules. (Rules from the CUDA Array
Interface v3 specification in Numba's documentation and the Python array API standard's
``__dlpack__`` description.)
"""
from __future__ import annotations

import ctypes
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from trtopt.cuda.memory import DeviceBuffer, PinnedBuffer, copy_dtoh_async, copy_htod_async
from trtopt.errors import UsageError

KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13
# Stream values shared by the array interface and the CUDA runtime (cudaStreamLegacy, cudaStreamPerThread)
LEGACY_DEFAULT_STREAM, PER_THREAD_DEFAULT_STREAM = 1, 2


@dataclass
class DeviceView:
    """Where a device array's bytes are: pointer, shape, dtype, and the producer stream to wait on."""

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    wait_stream: int | None = None  # order our work after this stream's (None: nothing to wait for)
    keepalive: Any = None  # the object/capsule that owns the memory, held for the duration of use

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def typestr(dtype: np.dtype) -> str:
    """``__cuda_array_interface__`` typestr; bfloat16/fp8 have none, so they travel as raw bytes."""
    dtype = np.dtype(dtype)
    return dtype.str if dtype.str[1] in "biuf" else f"|V{dtype.itemsize}"


def resolve_raw_dtype(given: np.dtype, expected: np.dtype) -> np.dtype:
    """Raw ``|V<n>`` bytes stand for `expected` when that type has no typestr of its own (bfloat16,
    fp8) and the width matches: how bf16/fp8 device arrays round-trip through the interface."""
    given, expected = np.dtype(given), np.dtype(expected)
    if (
        given.kind == "V"
        and given.fields is None
        and typestr(expected).startswith("|V")
        and given.itemsize == expected.itemsize
    ):
        return expected
    return given


def _is_c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...] | None, itemsize: int) -> bool:
    if strides is None:
        return True
    expected = itemsize
    for dim, stride in zip(reversed(shape), reversed(strides)):
        if dim != 1 and stride != expected:
            return False
        expected *= dim
    return True


def producer_stream(cai: Mapping[str, Any], name: str = "array") -> int | None:
    """The stream whose pending work must finish before we read or write the array (see module doc)."""
    if "stream" not in cai:
        return LEGACY_DEFAULT_STREAM  # interface versions before 3 state no stream
    stream = cai["stream"]
    if stream is None:
        return None
    if isinstance(stream, bool) or not isinstance(stream, int):
        raise UsageError(f"{name}: __cuda_array_interface__ stream must be an integer or None, got {stream!r}")
    if stream == 0:
        raise UsageError(f"{name}: __cuda_array_interface__ stream 0 is not allowed (ambiguous between the legacy "
                         "and per-thread default streams; the interface uses 1 and 2 for those)")
    return stream


def choose_protocol(cai: Mapping[str, Any] | None, dlpack_device_type: int | None) -> str | None:
    """"cai", "dlpack" or None (host data). A v3 interface that states its stream is used as is;
    otherwise DLPack on a CUDA device is preferred for its stream handshake; a streamless interface
    comes last (ordered after the legacy default stream only)."""
    dlpack_cuda = dlpack_device_type in (KDL_CUDA, KDL_CUDA_MANAGED)
    if cai is not None and "stream" in cai:
        return "cai"
    if dlpack_cuda:
        return "dlpack"
    return "cai" if cai is not None else None


def parse_cuda_array_interface(cai: Mapping[str, Any], name: str = "array") -> DeviceView:
    """Validate a ``__cuda_array_interface__`` dict; the runner needs dense C-order data."""
    try:
        ptr, _readonly = cai["data"]
        shape = tuple(int(d) for d in cai["shape"])
        if not isinstance(cai["typestr"], str):
            raise TypeError(f"typestr {cai['typestr']!r} is not a string")
        dtype = np.dtype(cai["typestr"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{name}: malformed __cuda_array_interface__ ({exc})") from exc
    if cai.get("mask") is not None:
        raise UsageError(f"{name}: masked device arrays are not supported")
    strides = cai.get("strides")
    if not _is_c_contiguous(shape, tuple(strides) if strides is not None else None, dtype.itemsize):
        raise UsageError(
            f"{name}: device array is not C-contiguous (strides {strides}); make it contiguous first (e.g. "
            "tensor.contiguous())"
        )
    return DeviceView(int(ptr or 0), shape, dtype, producer_stream(cai, name))


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_DL_CODES = {0: "int", 1: "uint", 2: "float"}
# dlpack.h DLDataTypeCode members with one numpy (ml_dtypes) equivalent, by (code, bits)
_DL_SPECIAL = {(4, 16): np.dtype(ml_dtypes.bfloat16), (6, 8): np.dtype(np.bool_),
               (10, 8): np.dtype(ml_dtypes.float8_e4m3fn), (12, 8): np.dtype(ml_dtypes.float8_e5m2)}


def _dl_dtype(code: int, bits: int, lanes: int, name: str) -> np.dtype:
    special = _DL_SPECIAL.get((code, bits))
    if lanes == 1 and special is not None:
        return special
    kind = _DL_CODES.get(code)
    if lanes != 1 or kind is None:
        raise UsageError(f"{name}: DLPack dtype (code {code}, {bits} bits, {lanes} lanes) is not supported")
    return np.dtype(f"{kind}{bits}")


def parse_dlpack_capsule(capsule: Any, name: str = "array") -> tuple[DeviceView, int]:
    """Read a legacy ``"dltensor"`` capsule; returns the view and the DLPack device type.

    The capsule is not consumed (not renamed), so when it is garbage-collected its destructor
    releases the producer's memory: keep it alive (``DeviceView.keepalive``) while in use.
    """
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    try:
        address = get_pointer(capsule, b"dltensor")
    except ValueError as exc:
        raise UsageError(f"{name}: __dlpack__ did not return a 'dltensor' capsule ({exc})") from exc
    tensor = _DLTensor.from_address(address)  # DLManagedTensor starts with its DLTensor
    shape = tuple(tensor.shape[i] for i in range(tensor.ndim))
    dtype = _dl_dtype(tensor.dtype.code, tensor.dtype.bits, tensor.dtype.lanes, name)
    strides = tuple(tensor.strides[i] * dtype.itemsize for i in range(tensor.ndim)) if tensor.strides else None
    if not _is_c_contiguous(shape, strides, dtype.itemsize):
        raise UsageError(f"{name}: DLPack tensor is not C-contiguous; make it contiguous first")
    ptr = (tensor.data or 0) + tensor.byte_offset
    return DeviceView(ptr, shape, dtype, None, capsule), tensor.device.device_type


def _array_interface(obj: Any) -> Mapping[str, Any] | None:
    """The object's ``__cuda_array_interface__``, or None: PyTorch raises AttributeError for CPU
    tensors and TypeError for dtypes the interface cannot express (bfloat16), DLPack then serves."""
    try:
        return getattr(obj, "__cuda_array_interface__", None)
    except (AttributeError, TypeError):
        return None


def device_view(obj: Any, stream: int | None, name: str = "array") -> DeviceView | None:
    """A DeviceView for a CUDA array, or None for host data. `stream` is the stream that will use
    the array: DLPack producers order their pending work before it (see :func:`choose_protocol`)."""
    cai = _array_interface(obj)
    dl_device = getattr(obj, "__dlpack_device__", None)
    device_type = int(dl_device()[0]) if dl_device is not None and hasattr(obj, "__dlpack__") else None
    protocol = choose_protocol(cai, device_type)
    if protocol == "cai":
        view = parse_cuda_array_interface(cai, name)
        view.keepalive = obj
        return view
    if protocol == "dlpack":
        view, _ = parse_dlpack_capsule(obj.__dlpack__(stream=stream), name)
        return view  # the producer has ordered its work before `stream`: nothing to wait on
    return None


class DeviceArray:
    """A runner output left on the GPU; owns its memory and exposes ``__cuda_array_interface__``.

    ``torch.as_tensor(a, device="cuda")`` and ``cupy.asarray(a)`` wrap it without a copy; keep
    the DeviceArray (or the wrapping tensor) alive while the data is used.
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, buffer: DeviceBuffer | None = None) -> None:
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self._buffer = buffer or DeviceBuffer(max(self.nbytes, 1))

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def ptr(self) -> int:
        return self._buffer.ptr

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        # stream None: the array is complete when handed out (the runner synchronizes first)
        return {"version": 3, "shape": self.shape, "typestr": typestr(self.dtype), "data": (self.ptr, False),
                "strides": None, "stream": None}

    @classmethod
    def from_host(cls, array: np.ndarray) -> "DeviceArray":
        """Copy a numpy array to a new device array through pinned memory (synchronous)."""
        from trtopt.cuda.stream import Stream

        host = np.ascontiguousarray(array)
        device = cls(host.shape, host.dtype)
        staging = PinnedBuffer(max(host.nbytes, 1))
        np.copyto(staging.view(host.shape, host.dtype), host)
        with Stream() as stream:
            copy_htod_async(device.ptr, staging.ptr, host.nbytes, stream.handle)
            stream.synchronize()
        staging.free()
        return device

    def to_host(self) -> np.ndarray:
        """Copy to a numpy array (synchronous)."""
        from trtopt.cuda.stream import Stream

        staging = PinnedBuffer(max(self.nbytes, 1))
        with Stream() as stream:
            copy_dtoh_async(staging.ptr, self.ptr, self.nbytes, stream.handle)
            stream.synchronize()
        result = np.array(staging.view(self.shape, self.dtype))
        staging.free()
        return result
