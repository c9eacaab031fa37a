"""What the host CPU is, read once from /proc/cpuinfo.

Both the ONNX Runtime backend (the device an engine is tied to) and benchmark reports (the
environment of a result) describe the CPU; they read it here so the two always agree.
"""
from __future__ import annotations

import functools
import platform

# The ISA extensions ONNX Runtime's CPU kernels dispatch on: they decide speed and int8 numerics.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_int8", "f16c", "fma",
             "asimd", "asimddp", "i8mm", "sve")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """First value of each /proc/cpuinfo key (lower-case); empty where the file does not exist."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_isa_flags() -> list[str]:
    info = _cpuinfo()
    present = set((info.get("flags") or info.get("features") or "").split())
    return sorted(flag for flag in ISA_FLAGS if flag in present)
