"""The v2 protocol's datatype names and Triton's model-config type names for numpy dtypes."""

from __future__ import annotations

import numpy as np

from trtopt.serve.errors import BadRequest

_V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_NUMPY_TO_V2 = {dtype: name for name, dtype in _V2_TO_NUMPY.items()}


def v2_name(dtype: np.dtype) -> str:
    """ "FP32" for float32 and so on (the spelling of the v2 protocol's `datatype` field)."""
    return _NUMPY_TO_V2[np.dtype(dtype)]


def config_name(dtype: np.dtype) -> str:
    """ "TYPE_FP32" for float32 (Triton's model configuration spelling; BOOL is TYPE_BOOL)."""
    return "TYPE_" + v2_name(dtype)


def numpy_dtype(datatype: str, tensor: str) -> np.dtype:
    """The numpy dtype of a v2 datatype name, or BadRequest naming the tensor."""
    dtype = _V2_TO_NUMPY.get(str(datatype).upper()) if isinstance(datatype, str) else None
    if dtype is None:
        raise BadRequest(
            f"tensor {tensor!r}: datatype {datatype!r} is not served here; expected one of {sorted(_V2_TO_NUMPY)}"
        )
    return dtype
