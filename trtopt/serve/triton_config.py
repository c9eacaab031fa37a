"""Triton's model configuration for a trtopt engine: one function for `trtopt serve` and `export-triton`.

The served ``/config`` endpoint and the exported ``config.pbtxt`` are the same dict (field names of
Triton's ``ModelConfig`` message), so what a client reads from `trtopt serve` is what Triton gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trtopt.serve.datatypes import config_name
from trtopt.serve.settings import BatchingSettings
from trtopt.tensors import TensorInfo

# Triton platform of each trtopt backend's engine file; every ONNX Runtime flavour serves an ONNX model
TENSORRT_PLATFORM = "tensorrt_plan"
ONNX_PLATFORM = "onnxruntime_onnx"
_GPU_BACKENDS = ("tensorrt", "onnxruntime-cuda", "onnxruntime-tensorrt")


def platform_of(backend: str) -> str:
    return TENSORRT_PLATFORM if backend == "tensorrt" else ONNX_PLATFORM


def tensor_dims(info: TensorInfo, batched: bool) -> list[int]:
    """Dimensions with -1 for dynamic ones; without the batch axis when the model batches (Triton's rule)."""
    dims = [d if isinstance(d, int) else -1 for d in info.shape]
    return dims[1:] if batched else dims


def model_config(
    name: str, backend: str, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo], settings: BatchingSettings
) -> dict[str, Any]:
    """ModelConfig fields: platform, max_batch_size, dims, dynamic_batching, instance_group (with the profile)."""
    batched = bool(settings.max_batch_size)

    def tensors(infos: Sequence[TensorInfo]) -> list[dict[str, Any]]:
        return [{"name": i.name, "data_type": config_name(i.dtype), "dims": tensor_dims(i, batched)} for i in infos]

    platform = platform_of(backend)
    group: dict[str, Any] = {
        "count": settings.instances,
        "kind": "KIND_GPU" if backend in _GPU_BACKENDS else "KIND_CPU",
    }
    if platform == TENSORRT_PLATFORM and any(not info.is_static for info in inputs):
        group["profile"] = ["0"]  # trtopt builds one optimization profile per engine
    config: dict[str, Any] = {
        "name": name,
        "platform": platform,
        "max_batch_size": settings.max_batch_size or 0,
        "input": tensors(inputs),
        "output": tensors(outputs),
        "instance_group": [group],
    }
    if batched:
        config["dynamic_batching"] = {
            "preferred_batch_size": list(settings.preferred_batch_size),
            "max_queue_delay_microseconds": settings.max_queue_delay_microseconds,
            "default_queue_policy": {
                "max_queue_size": settings.max_queue_size,
                "default_timeout_microseconds": settings.default_timeout_microseconds,
            },
        }
    return config
