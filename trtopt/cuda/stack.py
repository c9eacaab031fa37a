"""Do cuda-python, the TensorRT wheel and the NVIDIA driver agree on the CUDA major version?

``pip install cuda-python`` takes the newest release, whose major follows CUDA's (13.x needs a
CUDA 13 driver), while TensorRT wheels are built per CUDA major (``tensorrt-cu12``,
``tensorrt-cu13``). With cuda-python 13 on a CUDA 12 driver every CUDA call fails
(cudaErrorInsufficientDriver) and TensorRT looks unusable for no visible reason. The extras
``trtopt[tensorrt-cu12]`` / ``trtopt[tensorrt-cu13]`` pin a matching pair; this module detects a
mismatch on installs made otherwise and says what to install. The rules are pure functions
(CPU-tested); the detection reads package metadata and asks the driver through ctypes, so it
works even when cuda-python's own calls cannot.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import re
from collections.abc import Iterable
from dataclasses import dataclass

_TRT_WHEEL = re.compile(r"^tensorrt[-_](?:(?:lean|dispatch)[-_])?cu(\d+)(?:[-_](?:libs|bindings))?$", re.IGNORECASE)


@dataclass(frozen=True)
class CudaStack:
    """What is installed: None where unknown (a TensorRT from a tarball or Debian package carries no
    wheel name; a machine without a driver has no driver version)."""

    cuda_python: str | None  # version of cuda-bindings (or cuda-python before the split)
    tensorrt_cuda_majors: frozenset[int]
    driver_cuda_version: int | None  # cuDriverGetVersion: 12040 for CUDA 12.4


def tensorrt_cuda_majors(distribution_names: Iterable[str]) -> frozenset[int]:
    """CUDA majors of installed TensorRT wheels: ``tensorrt-cu12`` / ``tensorrt_cu13_libs`` -> 12 / 13."""
    return frozenset(int(m.group(1)) for name in distribution_names if (m := _TRT_WHEEL.match(name.strip())))


def major_of(version: str) -> int:
    match = re.match(r"\s*(\d+)", version)
    if not match:
        raise ValueError(f"cannot read a major version from {version!r}")
    return int(match.group(1))


def driver_cuda_text(driver_version: int) -> str:
    """12040 -> ``12.4`` (the encoding of cuDriverGetVersion: 1000 * major + 10 * minor)."""
    return f"{driver_version // 1000}.{driver_version % 1000 // 10}"


def _cuda_python_pin(major: int) -> str:
    return f"'cuda-python=={major}.*'"


def stack_problems(stack: CudaStack) -> list[str]:
    """Why this combination cannot work, each with what to install; empty when it can (or when
    too little is known to tell)."""
    problems: list[str] = []
    if stack.cuda_python is None:
        return ["cuda-python is not installed (pip install 'trtopt[tensorrt-cu12]' or 'trtopt[tensorrt-cu13]', "
                "matching your TensorRT wheel)"]
    cp_major = major_of(stack.cuda_python)
    if len(stack.tensorrt_cuda_majors) > 1:
        wheels = ", ".join(f"tensorrt-cu{m}" for m in sorted(stack.tensorrt_cuda_majors))
        problems.append(f"TensorRT wheels for several CUDA majors are installed ({wheels}); uninstall all but one")
    elif stack.tensorrt_cuda_majors:
        trt_major = next(iter(stack.tensorrt_cuda_majors))
        if trt_major != cp_major:
            problems.append(f"cuda-python {stack.cuda_python} is for CUDA {cp_major} but the TensorRT wheel is "
                            f"tensorrt-cu{trt_major}: pip install {_cuda_python_pin(trt_major)} "
                            f"(or trtopt[tensorrt-cu{trt_major}])")
    if stack.driver_cuda_version is not None and stack.driver_cuda_version // 1000 < cp_major:
        driver_major = stack.driver_cuda_version // 1000
        problems.append(
            f"cuda-python {stack.cuda_python} needs a CUDA {cp_major} driver and this driver supports "
            f"CUDA {driver_cuda_text(stack.driver_cuda_version)}: pip install {_cuda_python_pin(driver_major)} "
            f"with a matching tensorrt-cu{driver_major}, or update the NVIDIA driver"
        )
    return problems


def _installed_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def driver_cuda_version() -> int | None:
    """The CUDA version the installed driver supports (cuDriverGetVersion needs no cuInit), or None."""
    library = ctypes.util.find_library("cuda") or "libcuda.so.1"
    try:
        driver = ctypes.CDLL(library)
    except OSError:
        return None
    version = ctypes.c_int(0)
    if driver.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
        return None
    return version.value


def detect_stack() -> CudaStack:
    """The installed combination (package metadata + the driver; imports neither TensorRT nor cuda-python)."""
    names = [dist.metadata["Name"] or "" for dist in importlib.metadata.distributions()]
    return CudaStack(
        _installed_version("cuda-bindings", "cuda-python"), tensorrt_cuda_majors(names), driver_cuda_version()
    )
