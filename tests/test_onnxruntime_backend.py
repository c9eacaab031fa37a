"""The ONNX Runtime Backend object: build = optimized model + session options, load = runner with them."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort

from trtopt.backends.onnxruntime import BACKEND, OnnxRuntimeRunner
from trtopt.backends.registry import BuildOptions, get_backend
from trtopt.settings import EngineSettings
from trtopt.quantization.calibrate import calibrate
from trtopt.quantization.qdq import quantize


def test_registry_identity_version_and_device():
    assert get_backend("onnxruntime") is BACKEND
    assert BACKEND.availability()[0]
    assert BACKEND.version() == ort.__version__
    device = BACKEND.device()
    assert device["kind"] == "cpu" and device["name"]
    assert BACKEND.device() == device, "the device record must be stable for load() to compare it"


def test_build_writes_optimized_model_and_session_options(residual_convnet, tmp_path):
    table = calibrate(residual_convnet, "random", method="max", max_samples=32)
    qdq = quantize(residual_convnet, table, tmp_path / "int8.onnx").path
    built = BACKEND.build(
        qdq, tmp_path, BuildOptions(precision="int8", encoding="onnxruntime-cpu", engine=EngineSettings(threads=1))
    )
    engine = tmp_path / built.engine_file
    ops = [n.op_type for n in onnx.load(engine).graph.node]
    assert "QLinearConv" in ops and "Conv" not in ops, "the saved engine holds the fused integer graph"
    session = json.loads((tmp_path / "session.json").read_text())
    assert session["intra_op_num_threads"] == 1 and session["config"] == {}
    assert built.manifest_fields["onnxruntime"]["session_file"] == "session.json"
    manifest = {"engine": {"file": built.engine_file}, "io": {"profile": None}}
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    with BACKEND.load(tmp_path, manifest) as runner, OnnxRuntimeRunner(qdq) as reference:
        np.testing.assert_allclose(
            runner.infer({"input": x})["logits"], reference.infer({"input": x})["logits"], atol=1e-4
        )


def test_tensorrt_encoding_runs_with_qdq_fusion_off(residual_convnet, tmp_path):
    table = calibrate(residual_convnet, "random", method="max", max_samples=32)
    qdq = quantize(residual_convnet, table, tmp_path / "int8.onnx", encoding="tensorrt").path
    BACKEND.build(qdq, tmp_path, BuildOptions(precision="int8", encoding="tensorrt"))
    session = json.loads((tmp_path / "session.json").read_text())
    assert session["config"] == {"session.disable_quant_qdq": "1"}

