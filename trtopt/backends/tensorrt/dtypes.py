"""TensorRT data types <-> numpy dtypes, by the enum member's *name*.

Mapping by name (``trt.DataType.HALF.name == "HALF"``) keeps this module free of TensorRT, so the
CPU suite checks it, and makes the failure explicit for types numpy cannot hold (INT4, FP4 are
packed sub-byte types: an engine exposing them as I/O needs a custom feed path, not a silent
wrong-size buffer). ``trt.nptype`` would raise a bare TypeError for those.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from trtopt.errors import UsageError

_BY_NAME: dict[str, np.dtype] = {
    "FLOAT": np.dtype(np.float32),
    "HALF": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "INT8": np.dtype(np.int8),
    "UINT8": np.dtype(np.uint8),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "BOOL": np.dtype(np.bool_),
    "FP8": np.dtype(ml_dtypes.float8_e4m3fn),
}
_NO_NUMPY = {"INT4", "FP4", "E8M0"}


def numpy_dtype(trt_type_name: str, tensor: str = "") -> np.dtype:
    """numpy dtype for a TensorRT DataType member name; UsageError naming the tensor if none fits."""
    key = trt_type_name.rsplit(".", 1)[-1].upper()
    dtype = _BY_NAME.get(key)
    if dtype is None:
        what = "a packed sub-byte type numpy cannot hold" if key in _NO_NUMPY else "unknown to trtopt"
        where = f"tensor {tensor!r}: " if tensor else ""
        raise UsageError(f"{where}TensorRT type {key} is {what}; keep engine I/O in FP32/FP16/INT8/INT32/INT64/BOOL")
    return dtype


def trt_type_name(dtype: np.dtype | type) -> str:
    """TensorRT DataType member name for a numpy dtype (inverse of :func:`numpy_dtype`)."""
    wanted = np.dtype(dtype)
    for name, candidate in _BY_NAME.items():
        if candidate == wanted:
            return name
    raise UsageError(f"numpy dtype {wanted} has no TensorRT equivalent")

