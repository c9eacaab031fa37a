"""Device and pinned host buffers that are reused across calls and grown on demand.

Allocation (cudaMalloc, and especially cudaMallocHost) costs far more than a small inference, so a
runner keeps one buffer per tensor and only reallocates when a larger shape arrives. Growth is
geometric (x1.5) so a slowly increasing batch does not reallocate every call. A buffer must not be
grown while work that uses it is in flight: callers synchronize their stream first (the TensorRT
runner does at the end of every call).
"""
from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import numpy as np

from trtopt.cuda.api import call, cudart, handle_int

# TensorRT's IExecutionContext::setTensorAddress: "The pointer must have at least 256-byte
# alignment" (NvInferRuntime.h, 10.x and 11.x). cudaMalloc returns at least that; caller arrays
# (a slice such as torch.empty(n + 1)[1:]) may not.
IO_ALIGNMENT = 256


def is_aligned(ptr: int, alignment: int = IO_ALIGNMENT) -> bool:
    """True when `ptr` may be bound as a TensorRT I/O address as is."""
    return ptr % alignment == 0


def _grown(capacity: int, wanted: int) -> int:
    size = max(wanted, int(capacity * 1.5))
    return (size + IO_ALIGNMENT - 1) // IO_ALIGNMENT * IO_ALIGNMENT


class _Buffer:
    """Shared life cycle: allocate, grow, free once."""

    _free_call = ""

    def __init__(self, nbytes: int = 0) -> None:
        self.ptr = 0
        self.capacity = 0
        if nbytes:
            self.ensure(nbytes)

    def _allocate(self, nbytes: int) -> int:
        raise NotImplementedError

    def ensure(self, nbytes: int) -> bool:
        """Make room for `nbytes`; True when the buffer was (re)allocated (its address changed)."""
        if nbytes <= self.capacity:
            return False
        size = _grown(self.capacity, nbytes)
        self.free()
        self.ptr = self._allocate(size)
        self.capacity = size
        return True

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr, self.capacity = self.ptr, 0, 0
            call(self._free_call, ptr)

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:  # noqa: BLE001 - at interpreter exit the CUDA context may already be gone
            pass


class DeviceBuffer(_Buffer):
    """Device memory from cudaMalloc (256-byte aligned, as TensorRT requires for I/O)."""

    _free_call = "cudaFree"

    def _allocate(self, nbytes: int) -> int:
        return handle_int(call("cudaMalloc", nbytes))


class PinnedBuffer(_Buffer):
    """Page-locked host memory: required for truly asynchronous host<->device copies."""

    _free_call = "cudaFreeHost"

    def _allocate(self, nbytes: int) -> int:
        return handle_int(call("cudaMallocHost", nbytes))

    def view(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A numpy array over the first bytes of the buffer (valid until the buffer grows or is freed)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes > self.capacity:
            raise ValueError(f"pinned buffer of {self.capacity} bytes cannot hold {nbytes}")
        if nbytes == 0:
            return np.empty(shape, dtype)
        raw = (ctypes.c_byte * nbytes).from_address(self.ptr)
        return np.frombuffer(raw, dtype=dtype).reshape(shape)


class BufferPool:
    """Named buffers of one kind, each grown independently (one per I/O tensor)."""

    def __init__(self, factory: Callable[[], _Buffer]) -> None:
        self._factory = factory
        self._buffers: dict[str, _Buffer] = {}

    def get(self, name: str, nbytes: int) -> _Buffer:
        buffer = self._buffers.get(name)
        if buffer is None:
            buffer = self._buffers[name] = self._factory()
        buffer.ensure(max(nbytes, 1))
        return buffer

    @property
    def total_bytes(self) -> int:
        return sum(b.capacity for b in self._buffers.values())

    def close(self) -> None:
        for buffer in self._buffers.values():
            buffer.free()
        self._buffers.clear()


def _kind(name: str) -> Any:
    return getattr(cudart().cudaMemcpyKind, name)


def copy_htod_async(dst: int, src: int, nbytes: int, stream: Any) -> None:
    call("cudaMemcpyAsync", dst, src, nbytes, _kind("cudaMemcpyHostToDevice"), stream)


def copy_dtoh_async(dst: int, src: int, nbytes: int, stream: Any) -> None:
    call("cudaMemcpyAsync", dst, src, nbytes, _kind("cudaMemcpyDeviceToHost"), stream)


def copy_dtod_async(dst: int, src: int, nbytes: int, stream: Any) -> None:
    call("cudaMemcpyAsync", dst, src, nbytes, _kind("cudaMemcpyDeviceToDevice"), stream)
