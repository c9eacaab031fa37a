"""Loading a user's ONNX file with errors that say what is wrong with it.

Q/DQ insertion, FP16 conversion and the build all start from a user-supplied file; a truncated
download or a model with integer-only inputs should fail with one line naming the file, not with a
protobuf traceback deep inside a converter.
"""
from __future__ import annotations

import os
from pathlib import Path

import onnx

from trtopt.errors import UsageError

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


def load_onnx(path: str | os.PathLike[str], *, require_float_input: bool = True) -> onnx.ModelProto:
    """Parse and check an ONNX file; UsageError (exit 2) naming the file when it is not usable."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"ONNX model not found: {file}")
    try:
        model = onnx.load(os.fspath(file))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, or plain errors for truncated files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{file} is not a valid ONNX model (corrupt or truncated?): {first_line}") from exc
    if not model.graph.node:
        raise UsageError(f"{file} has an empty graph")
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if require_float_input and not any(i.type.tensor_type.elem_type in FLOAT_TYPES for i in inputs):
        described = (
            ", ".join(
                f"{i.name}: {onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type).lower()}" for i in inputs
            )
            or "none"
        )
        raise UsageError(
            f"{file} has no floating-point input (inputs: {described}); "
            "INT8/FP16 conversion and accuracy checks need a float input"
        )
    return model
