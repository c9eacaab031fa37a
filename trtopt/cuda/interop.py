"""Device arrays in and out without copies: ``__cuda_array_interface__`` (v3) and DLPack.

Serving code often already holds its batch on the GPU (a PyTorch CUDA tensor, a CuPy or pycuda
array). Copying it to the host and back would cost more than the inference, so the runner reads
the device pointer straight from the object. The parsing is pure (no GPU needed): the CPU tests
feed it real interface dicts and numpy's own DLPack capsules.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from trtopt.cuda.memory import DeviceBuffer, PinnedBuffer, copy_dtoh_async, copy_htod_async
from trtopt.errors import UsageError

KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13


@dataclass
class DeviceView:
    """Where a device array's bytes are: pointer, shape, dtype, and the stream that produced it."""

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    stream: int | None = None  # CAI v3: the producer's stream (consumer must order after it)
    keepalive: Any = None  # the object/capsule that owns the memory, held for the duration of use

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def typestr(dtype: np.dtype) -> str:
    """``__cuda_array_interface__`` typestr; bfloat16/fp8 have none, so they travel as raw bytes."""
    dtype = np.dtype(dtype)
    return dtype.str if dtype.str[1] in "biuf" else f"|V{dtype.itemsize}"


def _is_c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...] | None, itemsize: int) -> bool:
    if strides is None:
        return True
    expected = itemsize
    for dim, stride in zip(reversed(shape), reversed(strides)):
        if dim != 1 and stride != expected:
            return False
        expected *= dim
    return True


def parse_cuda_array_interface(cai: dict[str, Any], name: str = "array") -> DeviceView:
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
    stream = cai.get("stream")
    return DeviceView(int(ptr or 0), shape, dtype, None if stream is None else int(stream))


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_DL_CODES = {0: "int", 1: "uint", 2: "float", 4: "bfloat", 6: "bool"}


def _dl_dtype(code: int, bits: int, lanes: int, name: str) -> np.dtype:
    kind = _DL_CODES.get(code)
    if lanes != 1 or kind is None:
        raise UsageError(f"{name}: DLPack dtype (code {code}, {bits} bits, {lanes} lanes) is not supported")
    if kind == "bfloat":
        return np.dtype(ml_dtypes.bfloat16)
    if kind == "bool":
        return np.dtype(np.bool_)
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


def device_view(obj: Any, stream: int | None, name: str = "array") -> DeviceView | None:
    """A DeviceView for a CUDA array (CAI preferred, then DLPack), or None for host data."""
    cai = getattr(obj, "__cuda_array_interface__", None)
    if cai is not None:
        view = parse_cuda_array_interface(cai, name)
        view.keepalive = obj
        return view
    dl_device = getattr(obj, "__dlpack_device__", None)
    if dl_device is None:
        return None
    device_type, _device_id = dl_device()
    if device_type not in (KDL_CUDA, KDL_CUDA_MANAGED):
        return None  # host memory (numpy, CPU tensors): the host path copies it
    view, _ = parse_dlpack_capsule(obj.__dlpack__(stream=stream), name)
    return view


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
        # stream None: the runner synchronizes before handing the array out
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
