"""CPU tests for the options the onnxruntime-tensorrt backend hands ONNX Runtime's TensorRT EP."""
from __future__ import annotations

import pytest

from trtopt.backends.onnxruntime_gpu import tensorrt_ep_options
from trtopt.backends.registry import BuildOptions
from trtopt.settings import EngineSettings
from trtopt.tensors import ShapeProfile
from trtopt.errors import UsageError

PROFILE = ShapeProfile(min={"input": (1, 3, 16, 16), "mask": (1, 16)}, opt={"input": (8, 3, 16, 16), "mask": (8, 16)},
                       max={"input": (32, 3, 16, 16), "mask": (32, 16)})


def test_profile_becomes_explicit_ep_shapes() -> None:
    options = tensorrt_ep_options(BuildOptions(profile=PROFILE, engine=EngineSettings(workspace_bytes=1 << 30)))
    assert options == {"trt_max_workspace_size": 1 << 30,
                       "trt_profile_min_shapes": "input:1x3x16x16,mask:1x16",
                       "trt_profile_opt_shapes": "input:8x3x16x16,mask:8x16",
                       "trt_profile_max_shapes": "input:32x3x16x16,mask:32x16"}


def test_static_model_and_int8() -> None:
    assert tensorrt_ep_options(BuildOptions()) == {}
    assert tensorrt_ep_options(BuildOptions(precision="int8")) == {"trt_int8_enable": True}
    assert "trt_int8_enable" not in tensorrt_ep_options(BuildOptions(precision="fp16"))


def test_bad_profiles_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="rename the input"):
        tensorrt_ep_options(BuildOptions(profile=ShapeProfile(min={"a:b": (1,)}, opt={"a:b": (1,)}, max={"a:b": (1,)})))
    with pytest.raises(UsageError, match="same inputs"):
        tensorrt_ep_options(BuildOptions(profile=ShapeProfile(min={"x": (1,)}, opt={}, max={"x": (2,)})))
