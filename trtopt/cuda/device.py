"""Which CUDA device is here: count, name, compute capability.

Backend selection needs to know whether a GPU exists without importing torch, and engines record
the GPU name and compute capability they were built on. The probe uses cuda-python when installed
and otherwise asks the driver library directly through ctypes, so ``--backend auto`` can answer
"TensorRT is installed but there is no GPU" on any machine.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from typing import Any

from trtopt.cuda.api import CudaError, CudaUnavailable, call, cudart


@dataclass(frozen=True)
class DeviceInfo:
    """What an engine is tied to: the GPU model and its compute capability."""

    index: int
    name: str
    compute_capability: str  # "8.6"
    total_memory: int  # bytes

    def to_json(self) -> dict[str, Any]:
        """The identity an engine is tied to (no index or memory size: those differ between
        machines that run the same engine equally well)."""
        return {"kind": "cuda", "name": self.name, "compute_capability": self.compute_capability}


def _decode_name(raw: Any) -> str:
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw).split(b"\0", 1)[0].decode(errors="replace").strip()
    return str(raw).strip()


def device_info(index: int = 0) -> DeviceInfo:
    """Properties of CUDA device `index` via cuda-python (raises CudaError/CudaUnavailable)."""
    props = call("cudaGetDeviceProperties", index)
    return DeviceInfo(index, _decode_name(props.name), f"{props.major}.{props.minor}", int(props.totalGlobalMem))


def _driver_device_count() -> tuple[int, str]:
    """cuInit + cuDeviceGetCount through ctypes, for machines without cuda-python."""
    library = ctypes.util.find_library("cuda") or "libcuda.so.1"
    try:
        driver = ctypes.CDLL(library)
    except OSError:
        return 0, "no NVIDIA driver (libcuda not found)"
    status = driver.cuInit(0)
    if status != 0:
        return 0, f"the NVIDIA driver found no usable GPU (cuInit error {status})"
    count = ctypes.c_int(0)
    status = driver.cuDeviceGetCount(ctypes.byref(count))
    if status != 0:
        return 0, f"cuDeviceGetCount failed (error {status})"
    return count.value, "" if count.value else "the NVIDIA driver reports no GPU"


def probe_devices() -> tuple[int, str]:
    """(number of CUDA devices, reason when 0). Never raises."""
    try:
        cudart()
    except CudaUnavailable:
        return _driver_device_count()
    try:
        count = call("cudaGetDeviceCount")
    except CudaError as exc:
        from trtopt.cuda.stack import detect_stack, stack_problems

        stack = detect_stack()
        hints = stack_problems(stack)  # the usual cause with a driver: cuda-python newer than it
        if stack.driver_cuda_version is None:
            hints.append("no NVIDIA driver (libcuda) was found")
        return 0, f"no usable CUDA device ({exc})" + "".join(f"; {hint}" for hint in hints)
    return int(count), "" if count else "no CUDA device"
