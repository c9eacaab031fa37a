"""`trtopt export-triton`: a Triton model repository whose config parses with Triton's own ModelConfig."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli

pytest.importorskip("tritonclient.grpc", reason="the serve extra is not installed")
import onnxruntime as ort  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from serving import MAX_BATCH, build_engine  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402

import trtopt  # noqa: E402
from trtopt.serve.settings import BatchingSettings  # noqa: E402
from trtopt.serve.triton_config import model_config  # noqa: E402
from trtopt.serve.triton_export import config_text  # noqa: E402
from trtopt.tensors import TensorInfo  # noqa: E402


def export(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("export-triton", *args)


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_onnxruntime_engine_exports_as_onnxruntime_onnx_with_batching(tmp_path):
    engine = build_engine(tmp_path)
    config_file = tmp_path / "serve.toml"
    config_file.write_text(
        "[models.convnet]\npreferred_batch_size = [4]\ninstances = 2\nmax_queue_delay_microseconds = 100\n"
    )
    repository = tmp_path / "triton"
    result = export(str(engine.parent), "--repository", str(repository), "--config", str(config_file))
    assert result.returncode == 0, result.stderr
    config = parse(repository / "convnet" / "config.pbtxt")
    assert (config.name, config.platform, config.max_batch_size) == ("convnet", "onnxruntime_onnx", MAX_BATCH)
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("input", model_config_pb2.TYPE_FP32, [3, 16, 16])
    ]
    assert [(t.name, list(t.dims)) for t in config.output] == [("logits", [10])]
    assert list(config.dynamic_batching.preferred_batch_size) == [4]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert (config.instance_group[0].count, config.instance_group[0].kind) == (
        2,
        model_config_pb2.ModelInstanceGroup.KIND_CPU,
    )
    exported = repository / "convnet" / "1" / "model.onnx"
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    with trtopt.load(engine) as runner:
        np.testing.assert_allclose(
            session.run(None, {"input": x})[0], runner.infer({"input": x})["logits"], rtol=1e-5, atol=1e-5
        )
    again = export(str(engine), "--repository", str(repository))
    assert again.returncode == 2 and "already exists; pass --force" in again.stderr
    assert export(str(engine), "--repository", str(repository), "--force").returncode == 0
    assert not parse(repository / "convnet" / "config.pbtxt").dynamic_batching.preferred_batch_size


def test_export_refuses_a_folder_without_engines(tmp_path):
    result = export(str(tmp_path), "--repository", str(tmp_path / "out"))
    assert result.returncode == 2 and "holds no engine folders" in result.stderr


def test_tensorrt_config_names_the_plan_platform_gpu_instances_and_profile():
    inputs = [TensorInfo("images", np.dtype(np.float16), ("batch", 3, 224, 224))]
    outputs = [TensorInfo("scores", np.dtype(np.float32), ("batch", 1000))]
    config = model_config("resnet", "tensorrt", inputs, outputs, BatchingSettings(max_batch_size=32, instances=2))
    parsed = text_format.Parse(config_text(config), model_config_pb2.ModelConfig())
    assert (parsed.platform, parsed.max_batch_size) == ("tensorrt_plan", 32)
    assert parsed.input[0].data_type == model_config_pb2.TYPE_FP16 and list(parsed.input[0].dims) == [3, 224, 224]
    group = parsed.instance_group[0]
    assert (group.kind, group.count, list(group.profile)) == (model_config_pb2.ModelInstanceGroup.KIND_GPU, 2, ["0"])
    unbatched = model_config("resnet", "tensorrt", inputs, outputs, BatchingSettings(max_batch_size=0))
    assert unbatched["input"][0]["dims"] == [-1, 3, 224, 224] and "dynamic_batching" not in unbatched


def test_export_refuses_an_onnx_model_changed_or_missing_since_the_build(tmp_path):
    engine = build_engine(tmp_path)
    model = engine / json.loads((engine / "manifest.json").read_text())["model"]["file"]
    model.write_bytes(model.read_bytes() + b"\0")
    changed = export(str(engine), "--repository", str(tmp_path / "triton"))
    assert changed.returncode == 1, changed.stderr
    assert f"{model.name} has sha256" in changed.stderr and "(modified or corrupt)" in changed.stderr
    assert "trtopt build" in changed.stderr
    model.unlink()
    missing = export(str(engine), "--repository", str(tmp_path / "triton"))
    assert missing.returncode == 1 and f"model file {engine / model.name} is missing" in missing.stderr
    assert not (tmp_path / "triton" / "convnet").exists()
