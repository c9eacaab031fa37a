"""TensorRT builds and runs on a real GPU. Skipped, with the reason, where TensorRT or a GPU is missing.

Covers: FP32 / FP16 / Q/DQ INT8 builds, accuracy against ONNX Runtime FP32, device-array inputs and
outputs, concurrent contexts, CUDA graphs, and refusal of an engine built for another TensorRT version.
Feed checks, dynamic shapes and the profile bound are in the runner conformance test.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import make_residual_convnet
from trtopt.backends.registry import BuildOptions
from trtopt.settings import EngineSettings
from trtopt.errors import TrtoptError
from trtopt.shapes import derive_profile

pytestmark = pytest.mark.tensorrt  # skipped without TensorRT and a GPU by conftest, with the reason


def _ort(path: Path):
    from trtopt.backends.onnxruntime import OnnxRuntimeRunner

    return OnnxRuntimeRunner(path)


def _build(onnx_path: Path, folder: Path, shapes: str | None = None, timing_cache: Path | None = None,
           precision: str = "fp32", **engine_settings):
    """Build into `folder`; the timing cache lives in `timing_cache` (default: a folder of its own)."""
    from trtopt.backends.tensorrt import BACKEND

    profile = derive_profile(_ort(onnx_path).inputs, shapes=shapes, default_max_batch=8)
    engine = EngineSettings(tf32=False, timing_cache=str(timing_cache or folder / "cache"), **engine_settings)
    options = BuildOptions(precision=precision, profile=profile, engine=engine)
    folder.mkdir(parents=True, exist_ok=True)
    built = BACKEND.build(onnx_path, folder, options)
    manifest = {"name": onnx_path.stem, "engine": {"file": built.engine_file}, **built.manifest_fields}
    return BACKEND, manifest


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _batch(n: int) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, 3, 16, 16)).astype(np.float32)


def make_qdq_conv(path: Path) -> Path:
    """Conv with symmetric INT8 Q/DQ on data (per-tensor) and weight (per-channel, axis 0)."""
    rng = np.random.default_rng(1)
    weight = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    w_scale = (np.abs(weight).reshape(8, -1).max(axis=1) / 127).astype(np.float32)
    q_weight = np.clip(np.round(weight / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
    inits = [
        numpy_helper.from_array(q_weight, "w_q"),
        numpy_helper.from_array(w_scale, "w_scale"),
        numpy_helper.from_array(np.zeros(8, np.int8), "w_zero"),
        numpy_helper.from_array(np.array(4.0 / 127, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "x_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "x_scale", "x_zero"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w_dq"], axis=0),
        helper.make_node("Conv", ["x_dq", "w_dq"], ["out"], name="conv", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq_conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 8, 16, 16])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def test_fp32_matches_onnxruntime_and_writes_artefacts(tmp_path: Path) -> None:
    model = make_residual_convnet(tmp_path / "fp32.onnx")
    backend, manifest = _build(model, tmp_path / "engine")
    record = manifest["tensorrt"]
    assert (tmp_path / "engine" / "model.engine").stat().st_size > 0
    assert (tmp_path / "engine" / record["inspector_file"]).is_file()
    assert Path(record["timing_cache"]).is_file() and record["strongly_typed"]
    assert record["device"]["compute_capability"] and record["inspector"]["layers"] > 0
    batch = _batch(4)
    with backend.load(tmp_path / "engine", manifest) as runner:
        got = runner.infer({"input": batch})["logits"]
    want = _ort(model).infer({"input": batch})["logits"]
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-3)


def test_timing_cache_is_reused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = make_residual_convnet(tmp_path / "m.onnx")
    shared = tmp_path / "timing"  # one cache folder for both builds, as `--timing-cache DIR` gives
    shared.mkdir()
    _backend, first = _build(model, tmp_path / "a", timing_cache=shared)
    cache_file = Path(first["tensorrt"]["timing_cache"])
    assert cache_file.parent == shared and cache_file.stat().st_size > 0
    with caplog.at_level("INFO", logger="trtopt.tensorrt"):
        _backend, second = _build(model, tmp_path / "b", timing_cache=shared)
    assert second["tensorrt"]["timing_cache"] == str(cache_file)
    assert any("reusing timing cache" in r.getMessage() and str(cache_file) in r.getMessage() for r in caplog.records)


def test_fp16_onnx_builds_and_stays_close(tmp_path: Path) -> None:
    fp32 = make_residual_convnet(tmp_path / "fp32.onnx")
    fp16 = make_residual_convnet(tmp_path / "fp16.onnx", dtype=TensorProto.FLOAT16)
    backend, manifest = _build(fp16, tmp_path / "engine")
    batch = _batch(8)
    with backend.load(tmp_path / "engine", manifest) as runner:
        got = runner.infer({"input": batch.astype(np.float16)})["logits"].astype(np.float32)
    want = _ort(fp32).infer({"input": batch})["logits"]
    assert _cosine(got, want) > 0.999


def test_qdq_int8_builds_and_agrees_with_onnxruntime(tmp_path: Path) -> None:
    model = make_qdq_conv(tmp_path / "qdq.onnx")
    backend, manifest = _build(model, tmp_path / "engine", precision="int8")
    batch = _batch(2)
    with backend.load(tmp_path / "engine", manifest) as runner:
        got = runner.infer({"input": batch})["out"]
    want = _ort(model).infer({"input": batch})["out"]
    assert _cosine(got, want) > 0.99  # both run the same Q/DQ graph; kernels round differently


def test_device_arrays_in_and_out(tmp_path: Path) -> None:
    from trtopt.cuda.interop import DeviceArray

    model = make_residual_convnet(tmp_path / "m.onnx")
    backend, manifest = _build(model, tmp_path / "engine")
    batch = _batch(4)
    device_input = DeviceArray.from_host(batch)
    with backend.load(tmp_path / "engine", manifest) as runner:
        host_out = runner.infer({"input": batch})["logits"]
        device_out = runner.infer_device({"input": device_input})["logits"]
        assert isinstance(device_out, DeviceArray)
        np.testing.assert_allclose(device_out.to_host(), host_out, atol=1e-5)
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available():
            tensor = torch.from_numpy(batch).cuda()
            np.testing.assert_allclose(runner.infer({"input": tensor})["logits"], host_out, atol=1e-5)
            out = torch.empty((4, 10), device="cuda")
            assert runner.infer_device({"input": tensor}, out={"logits": out})["logits"] is out
            np.testing.assert_allclose(out.cpu().numpy(), host_out, atol=1e-5)


def test_concurrent_contexts(tmp_path: Path) -> None:
    model = make_residual_convnet(tmp_path / "m.onnx")
    backend, manifest = _build(model, tmp_path / "engine", contexts=2)
    assert manifest["tensorrt"]["optimization_profiles"] == 2
    batches = [_batch(n) for n in (1, 2, 3, 4)]
    with backend.load(tmp_path / "engine", manifest) as single:
        expected = [single.infer({"input": b})["logits"] for b in batches]
    errors: list[BaseException] = []
    with backend.load(tmp_path / "engine", manifest, contexts=2) as runner:
        def worker() -> None:
            try:
                for _ in range(10):
                    for batch, want in zip(batches, expected):
                        np.testing.assert_allclose(runner.infer({"input": batch})["logits"], want, atol=1e-5)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors[0]


def test_cuda_graph_fixed_shape(tmp_path: Path) -> None:
    model = make_residual_convnet(tmp_path / "m.onnx")
    backend, manifest = _build(model, tmp_path / "engine", shapes="input:4x3x16x16")
    batch = _batch(4)
    with (
        backend.load(tmp_path / "engine", manifest) as plain,
        backend.load(tmp_path / "engine", manifest, cuda_graph=True) as graphed,
    ):
        want = plain.infer({"input": batch})["logits"]
        for _ in range(3):
            np.testing.assert_allclose(graphed.infer({"input": batch})["logits"], want, atol=1e-6)
        other = _batch(4) * 2
        np.testing.assert_allclose(
            graphed.infer({"input": other})["logits"], plain.infer({"input": other})["logits"], atol=1e-6
        )


def test_refuses_engine_from_another_version_or_corrupt(tmp_path: Path) -> None:
    model = make_residual_convnet(tmp_path / "m.onnx")
    backend, manifest = _build(model, tmp_path / "engine")
    foreign = {**manifest, "tensorrt": {**manifest["tensorrt"], "version": "9.0.0"}}
    with pytest.raises(TrtoptError, match="Rebuild it on this machine"):
        backend.load(tmp_path / "engine", foreign)
    (tmp_path / "engine" / "model.engine").write_bytes(b"not an engine")
    with pytest.raises(TrtoptError, match="cannot deserialize"):
        backend.load(tmp_path / "engine", manifest)


def test_parser_errors_name_the_node(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["input"], ["out"], name="mystery", domain="trtopt.test")],
        "bad",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("trtopt.test", 1)])
    onnx.save(model, tmp_path / "bad.onnx")
    from trtopt.backends.tensorrt import BACKEND

    with pytest.raises(TrtoptError, match="mystery"):
        BACKEND.build(tmp_path / "bad.onnx", tmp_path, BuildOptions())


def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip(f"PyTorch {torch.__version__} here has no CUDA")
    return torch


@pytest.fixture(scope="module")
def dynamic_engine(tmp_path_factory: pytest.TempPathFactory):
    """One dynamic-batch (1..8) convnet engine shared by the runner tests below: (backend, manifest, folder)."""
    folder = tmp_path_factory.mktemp("dynamic")
    model = make_residual_convnet(folder / "m.onnx")
    backend, manifest = _build(model, folder / "engine")
    return backend, manifest, folder / "engine"


def test_cuda_graph_alternating_batches_match_plain_runs(dynamic_engine) -> None:
    backend, manifest, folder = dynamic_engine
    with backend.load(folder, manifest) as plain, backend.load(folder, manifest, cuda_graph=True) as graphed:
        for n in (1, 4, 1, 4, 1, 1, 4, 4):
            batch = _batch(n) * (1 + n)
            want = plain.infer({"input": batch})["logits"]
            np.testing.assert_allclose(graphed.infer({"input": batch})["logits"], want, atol=1e-6)
        assert len(graphed._all_slots[0].graphs) == 2  # one graph per batch size, replayed after an enqueue


def test_infer_device_with_graphs_captures_once(tmp_path: Path) -> None:
    from trtopt.cuda.interop import DeviceArray

    model = make_residual_convnet(tmp_path / "m.onnx")
    backend, manifest = _build(model, tmp_path / "engine", shapes="input:4x3x16x16")
    batch = _batch(4)
    with backend.load(tmp_path / "engine", manifest, cuda_graph=True) as runner:
        want = runner.infer({"input": batch})["logits"]
        for _ in range(4):  # a new output DeviceArray each call: still one graph
            got = runner.infer_device({"input": DeviceArray.from_host(batch)})["logits"]
            np.testing.assert_allclose(got.to_host(), want, atol=1e-6)
        assert len(runner._all_slots[0].graphs) == 1


@pytest.fixture
def torch_and_runner(dynamic_engine):
    """(torch with CUDA, a plain runner of the shared dynamic engine)."""
    torch = _torch_cuda()
    backend, manifest, folder = dynamic_engine
    with backend.load(folder, manifest) as runner:
        yield torch, runner


def test_misaligned_torch_input_and_output(torch_and_runner) -> None:
    torch, runner = torch_and_runner
    batch = _batch(2)
    want = runner.infer({"input": batch})["logits"]
    tensor = torch.empty(batch.size + 1, device="cuda")[1:]  # 4 bytes past a 256-byte boundary
    tensor.copy_(torch.from_numpy(batch.ravel()).cuda())
    out = torch.empty(2 * 10 + 1, device="cuda")[1:].view(2, 10)
    assert tensor.data_ptr() % 256 and out.data_ptr() % 256
    runner.infer_device({"input": tensor.view(batch.shape)}, out={"logits": out})
    np.testing.assert_allclose(out.cpu().numpy(), want, atol=1e-5)


def test_producer_race_with_a_torch_kernel(torch_and_runner) -> None:
    """infer right after a long torch kernel that writes the input: same result as after synchronizing."""
    torch, runner = torch_and_runner
    batch = _batch(4)
    want = runner.infer({"input": batch})["logits"]
    tensor = torch.zeros(batch.shape, device="cuda")
    source = torch.from_numpy(batch).cuda()
    torch.cuda.synchronize()
    torch.cuda._sleep(300_000_000)  # a long kernel (~0.2 s) on torch's stream, then the write
    tensor.copy_(source)
    got = runner.infer({"input": tensor})["logits"]  # at once: no synchronize in between
    torch.cuda.synchronize()
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(runner.infer({"input": tensor})["logits"], want, atol=1e-5)


def test_runner_dropped_without_close_is_released(dynamic_engine) -> None:
    import gc

    backend, manifest, folder = dynamic_engine
    runner = backend.load(folder, manifest, cuda_graph=True)
    runner.infer({"input": _batch(1)})
    finalizer = runner._finalizer
    del runner
    gc.collect()
    assert not finalizer.alive  # contexts, streams, buffers and graphs were released
