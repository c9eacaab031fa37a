"""The calibration session: models with external data, where the forward pass runs, the CLI flag."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from trtopt.errors import UsageError
from trtopt.quantization.calibrate import calibrate
from trtopt.quantization.providers import CPU, CUDA, TENSORRT, calibration_providers, select_providers
from trtopt.quantization.session import EXTERNAL_FOLDER_KEY, detach_weights


def _with_external_weights(source: Path, folder: Path) -> Path:
    folder.mkdir()
    model = onnx.load(source)
    onnx.save_model(model, folder / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=False,
                    size_threshold=0)  # one file per tensor, named after it
    return folder / "model.onnx"


def test_external_data_model_calibrates_in_place_like_the_embedded_one(tmp_path: Path, residual_convnet: Path) -> None:
    external = _with_external_weights(residual_convnet, tmp_path / "ext")
    assert len(list((tmp_path / "ext").iterdir())) > 5  # the graph and one file per weight
    np.savez(tmp_path / "d.npz", input=np.random.default_rng(0).standard_normal((12, 3, 16, 16)).astype(np.float32))
    embedded = calibrate(residual_convnet, str(tmp_path / "d.npz"), batch_size=4)
    in_place = calibrate(external, str(tmp_path / "d.npz"), batch_size=4)
    assert {name: stats.amax for name, stats in in_place.tensors.items()} == \
        {name: stats.amax for name, stats in embedded.tensors.items()}
    # the session reads the original weight files; nothing of the weights is rewritten
    graph = onnx.load(external, load_external_data=False)
    (tmp_path / "augmented").mkdir()
    config = detach_weights(graph, external.parent, tmp_path / "augmented")
    assert config == {EXTERNAL_FOLDER_KEY: os.fspath(external.parent.resolve())}
    assert not os.listdir(tmp_path / "augmented") and graph.ByteSize() < 4096


def test_embedded_weights_leave_the_graph_when_written(tmp_path: Path, residual_convnet: Path) -> None:
    model = onnx.load(residual_convnet)
    large = {init.name for init in model.graph.initializer if len(init.raw_data) >= 1024}
    (tmp_path / "detached").mkdir()
    config = detach_weights(model, residual_convnet.parent, tmp_path / "detached")
    [weights] = (tmp_path / "detached").iterdir()
    assert config == {} and large and weights.stat().st_size >= 1024 * len(large)
    moved = {init.name for init in model.graph.initializer if init.data_location == onnx.TensorProto.EXTERNAL}
    assert moved == large and not any(init.raw_data for init in model.graph.initializer if init.name in moved)


def test_missing_external_data_file_is_a_one_line_error(tmp_path: Path, residual_convnet: Path) -> None:
    external = _with_external_weights(residual_convnet, tmp_path / "ext")
    victim = next(p for p in external.parent.iterdir() if p.suffix != ".onnx")
    victim.unlink()
    with pytest.raises(UsageError, match=f"ONNX Runtime cannot load .*{victim.name}"):
        calibrate(external, "random", max_samples=2)


GPU_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize(("device", "available", "devices", "expected"), [
    ("auto", GPU_PROVIDERS, 1, (CUDA, CPU)),  # auto never builds a TensorRT engine for calibration
    ("auto", GPU_PROVIDERS, 0, (CPU,)),
    ("auto", [CPU], 2, (CPU,)),
    ("cpu", GPU_PROVIDERS, 1, (CPU,)),
    ("cuda", GPU_PROVIDERS, 1, (CUDA, CPU)),
    ("tensorrt", GPU_PROVIDERS, 1, (TENSORRT, CUDA, CPU)),
])
def test_provider_choice(device: str, available: list[str], devices: int, expected: tuple[str, ...]) -> None:
    choice = calibration_providers(device, available, devices, "driver not loaded")
    assert choice.providers == expected
    if expected == (CPU,) and device == "auto":
        assert choice.reason.startswith("CPU: ")
        assert "driver not loaded" in choice.reason or "no CUDAExecutionProvider" in choice.reason


@pytest.mark.parametrize(("device", "available", "devices", "message"), [
    ("cuda", [CPU], 1, "--calib-device cuda: onnxruntime has no CUDAExecutionProvider"),
    ("tensorrt", [CUDA, CPU], 1, "--calib-device tensorrt: onnxruntime has no TensorrtExecutionProvider"),
    ("cuda", GPU_PROVIDERS, 0, "--calib-device cuda: CUDAExecutionProvider is installed but driver not loaded"),
    ("gpu", GPU_PROVIDERS, 1, "--calib-device must be one of auto, cpu, cuda, tensorrt, got 'gpu'"),
])
def test_provider_choice_refuses_what_cannot_run(device: str, available: list[str], devices: int, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        calibration_providers(device, available, devices, "driver not loaded")


def test_cli_calib_device_cpu_and_bad_value(tmp_path: Path, residual_convnet: Path) -> None:
    env = {**os.environ, "TRTOPT_NO_PROGRESS": "1"}
    run = lambda *extra: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "trtopt", "calibrate", str(residual_convnet), "--calib-data", "random",
         "--max-samples", "4", "-o", "t.json", *extra],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    ok = run("--calib-device", "cpu")
    assert ok.returncode == 0, ok.stderr
    bad = run("--calib-device", "gpu")
    assert bad.returncode == 2 and "--calib-device" in bad.stderr


@pytest.mark.cuda
def test_forward_pass_runs_on_cuda_and_agrees_with_cpu(tmp_path: Path, residual_convnet: Path) -> None:
    choice = select_providers("auto")
    if choice.providers[0] != CUDA:
        pytest.skip(f"needs onnxruntime-gpu and a CUDA device: {choice.reason}")
    np.savez(tmp_path / "d.npz", input=np.random.default_rng(0).standard_normal((32, 3, 16, 16)).astype(np.float32))
    gpu = calibrate(residual_convnet, str(tmp_path / "d.npz"), method="percentile", device="cuda")
    cpu = calibrate(residual_convnet, str(tmp_path / "d.npz"), method="percentile", device="cpu")
    assert gpu.params["provider"] == CUDA and cpu.params["provider"] == CPU
    for name, stats in cpu.tensors.items():
        assert abs(gpu.tensors[name].amax - stats.amax) <= 2 * stats.absmax / 2048, name
