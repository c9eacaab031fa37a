"""Backend selection where TensorRT is absent (the CPU machines): auto falls back and says why."""
from __future__ import annotations

import subprocess
import sys

import pytest

from trtopt.backends import select
from trtopt.backends.tensorrt import availability
from trtopt.errors import TrtoptError, UsageError

pytestmark = pytest.mark.skipif(
    availability.tensorrt_status()[0] is not None, reason="TensorRT is installed here; these tests cover its absence"
)


def test_auto_falls_back_with_one_line_reason() -> None:
    name, reason = select.select_backend("auto")
    assert name == "onnxruntime"
    assert "tensorrt" in reason.lower() and "falling back to ONNX Runtime" in reason
    assert "\n" not in reason


def test_auto_names_the_missing_gpu_when_tensorrt_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    # The GPU probe is real (cuda-python or the driver via ctypes); only the TensorRT import is replaced.
    monkeypatch.setattr(availability, "tensorrt_status", lambda: ("10.9.0.34", ""))
    name, reason = select.select_backend("auto")
    assert name == "onnxruntime"
    assert "TensorRT 10.9.0.34 is installed but" in reason and "falling back" in reason


def test_unknown_backend_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--backend 'tensort' is unknown"):
        select.select_backend("tensort")


def test_explicit_tensorrt_fails_with_reason() -> None:
    with pytest.raises(
        TrtoptError, match="--backend tensorrt cannot run here: the tensorrt Python package is not installed"
    ) as info:
        select.select_backend("tensorrt")
    assert not isinstance(info.value, UsageError)


def test_tensorrt_backend_imports_without_tensorrt() -> None:
    code = ("import sys; from trtopt.backends.registry import get_backend; b = get_backend('tensorrt'); "
            "print(b.availability()[0]); assert 'tensorrt' not in sys.modules and 'torch' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    with pytest.raises(TrtoptError, match="tensorrt backend cannot run here"):
        from trtopt.backends.registry import get_backend
        get_backend("tensorrt").version()


def test_explicit_onnxruntime_and_gpu_providers() -> None:
    assert select.select_backend("onnxruntime") == ("onnxruntime", "onnxruntime: requested explicitly")
    import onnxruntime as ort
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(TrtoptError, match="no CUDAExecutionProvider .*install onnxruntime-gpu"):
        select.select_backend("onnxruntime-cuda")
    with pytest.raises(TrtoptError, match="no TensorrtExecutionProvider"):
        select.select_backend("onnxruntime-tensorrt")


def test_tensorrt_ep_gets_a_cache_in_the_engine_folder(tmp_path) -> None:
    from trtopt.backends.onnxruntime_gpu import provider_list

    chain = provider_list("TensorrtExecutionProvider", {"trt_max_workspace_size": 1 << 30}, tmp_path)
    assert [name for name, _ in chain] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    options = chain[0][1]
    assert options["trt_engine_cache_path"] == str(tmp_path / "trt-ep-cache") and options["trt_engine_cache_enable"]
    assert provider_list("CUDAExecutionProvider", {}, tmp_path) == [("CUDAExecutionProvider", {})]
