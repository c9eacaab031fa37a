"""Access to cuda-python's runtime bindings with every call checked.

cuda-python returns ``(cudaError_t, *results)`` tuples instead of raising; forgetting to look at the
error code is the classic way CUDA code fails silently. Every call in trtopt goes through
:func:`call`, which raises :class:`CudaError` naming the call and the CUDA error.
"""
from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

from trtopt.errors import TrtoptError


class CudaError(TrtoptError):
    """A CUDA runtime call failed; the message names the call and CUDA's error name."""

    def __init__(self, call_name: str, code: Any, description: str) -> None:
        self.call_name = call_name
        self.code = code
        super().__init__(f"CUDA call {call_name} failed: {description}")


class CudaUnavailable(TrtoptError):
    """cuda-python is not installed (or too old to have the runtime bindings)."""


@functools.lru_cache(maxsize=1)
def cudart() -> ModuleType:
    """cuda-python's runtime module (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python < 12.6 spelled the module this way
        except ImportError as exc:
            raise CudaUnavailable("cuda-python is not installed (pip install 'trtopt[cuda]' or cuda-python)") from exc
    return runtime


def error_text(code: Any) -> str:
    """``cudaErrorNoDevice (no CUDA-capable device is detected)`` for an error code."""
    rt = cudart()
    name_err, name = rt.cudaGetErrorName(code)
    text_err, text = rt.cudaGetErrorString(code)
    name_s = name.decode() if isinstance(name, bytes) and int(name_err) == 0 else str(code)
    text_s = text.decode() if isinstance(text, bytes) and int(text_err) == 0 else ""
    return f"{name_s} ({text_s})" if text_s else name_s


def unpack(call_name: str, result: Any) -> Any:
    """Check a cuda-python result tuple; return None, the single value, or a tuple of values."""
    if not isinstance(result, tuple):
        result = (result,)
    code, values = result[0], result[1:]
    if int(code) != 0:
        raise CudaError(call_name, code, error_text(code))
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def call(name: str, *args: Any) -> Any:
    """Call ``cudart.<name>(*args)`` and check it (see :func:`unpack`)."""
    return unpack(name, getattr(cudart(), name)(*args))


def handle_int(handle: Any) -> int:
    """The integer value of a cuda-python handle (stream, event, pointer) or of a plain int."""
    if handle is None:
        return 0
    if isinstance(handle, int):
        return handle
    return int(handle)
