"""The ONNX Runtime CPU encodings: 7-bit weights where int8 kernels saturate, full 8 bits where they cannot."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.backends.onnxruntime import OnnxRuntimeBackend
from trtopt.quantization.calibrate import calibrate
from trtopt.quantization.encodings import get_encoding, host_cpu_encoding
from trtopt.quantization.qdq import quantize

from conftest import make_residual_convnet

ON_INT32_DOT_HOST = host_cpu_encoding() == "onnxruntime-vnni"


def _run(path: Path, x: np.ndarray, fused: bool = True, optimized: Path | None = None) -> np.ndarray:
    """ONNX Runtime with its Q/DQ fusion into integer kernels (or without: exact float Q/DQ semantics)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    if not fused:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _int8_weights(path: Path) -> list[np.ndarray]:
    model = onnx.load(path)
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [constants[n.input[0]] for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in constants and constants[n.input[0]].dtype == np.int8]


def test_host_encoding_trusts_only_int32_dot_product_flags():
    assert host_cpu_encoding(["avx2", "fma", "avx512_vnni"]) == "onnxruntime-vnni"
    assert host_cpu_encoding(["avx2", "avx_vnni"]) == "onnxruntime-vnni"
    assert host_cpu_encoding(["avx2", "amx_int8"]) == "onnxruntime-vnni"
    assert host_cpu_encoding(["avx2", "avx512f", "fma"]) == "onnxruntime-cpu"  # vpmaddubsw sums in int16
    assert host_cpu_encoding(["asimd", "asimddp"]) == "onnxruntime-cpu"  # not verified: the safe 7 bits
    assert OnnxRuntimeBackend().default_encoding == host_cpu_encoding()


def test_vnni_encoding_uses_full_weight_range_and_integer_kernels(tmp_path):
    path = make_residual_convnet(tmp_path / "net.onnx")
    table = calibrate(path, "random", method="max", max_samples=32, batch_size=16)
    quantize(path, table, tmp_path / "cpu.onnx", encoding="onnxruntime-cpu")
    quantize(path, table, tmp_path / "vnni.onnx", encoding="onnxruntime-vnni")
    assert max(np.abs(w).max() for w in _int8_weights(tmp_path / "cpu.onnx")) == 63
    assert max(np.abs(w).max() for w in _int8_weights(tmp_path / "vnni.onnx")) == 127
    model = onnx.load(tmp_path / "vnni.onnx")
    assert any(i.data_type == TensorProto.INT32 for i in model.graph.initializer), "int32 biases as in onnxruntime-cpu"
    x = np.random.default_rng(1).standard_normal((64, 3, 16, 16)).astype(np.float32)
    reference = _run(path, x)
    errors = {name: np.abs(_run(tmp_path / f"{name}.onnx", x, fused=False) - reference).mean()
              for name in ("cpu", "vnni")}
    assert errors["vnni"] < 0.8 * errors["cpu"], errors  # twice the weight resolution shows at the output


def _saturating_matmul(path: Path, depth: int = 64) -> Path:
    """Relu -> MatMul with every weight at +-max: u8 x s8 pairs of 255 x 127 overflow an int16 sum."""
    weight = np.where(np.arange(depth * 8).reshape(depth, 8) % 3 == 0, -1.0, 1.0).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["m"]),
         helper.make_node("Relu", ["m"], ["y"])],
        "saturating", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", depth])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])], [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


@pytest.mark.skipif(not ON_INT32_DOT_HOST, reason="this CPU has no VNNI/AMX: its int8 kernels may saturate, "
                                                   "so trtopt uses 7-bit weights here")
def test_vnni_host_computes_full_range_weights_exactly(tmp_path):
    path = _saturating_matmul(tmp_path / "mm.onnx")
    x = np.ones((4, 64), np.float32)
    quantize(path, {"x": 1.0, "r": 1.0, "m": 64.0, "y": 64.0}, tmp_path / "q.onnx", encoding="onnxruntime-vnni")
    fused = _run(tmp_path / "q.onnx", x, optimized=tmp_path / "opt.onnx")
    exact = _run(tmp_path / "q.onnx", x, fused=False)
    ops = {n.op_type for n in onnx.load(tmp_path / "opt.onnx").graph.node}
    assert ops & {"QLinearMatMul", "MatMulIntegerToFloat"}, f"no u8 x s8 integer kernel ran: {ops}"
    assert np.abs(exact).max() > 10
    np.testing.assert_allclose(fused, exact, atol=0.6)  # a saturated int16 pair sum would be off by ~30


def test_uint8_activations_spend_their_levels_on_the_observed_range():
    encoding = get_encoding("onnxruntime-cpu")
    lopsided = encoding.activation_params(6.0, False, (-0.375, 7.5))  # a hardswish output clipped at amax 6
    assert lopsided.zero_point == 15 and lopsided.scale == pytest.approx(6.375 / 255)
    assert encoding.activation_params(6.0, False, (-9.0, -1.0)).zero_point == 255  # all negative: 0 at the top
    assert encoding.activation_params(6.0, False).zero_point == 128  # no recorded range: symmetric as before
    assert get_encoding("tensorrt").activation_params(6.0, False, (-0.375, 6.0)).zero_point == 0


def _hardswish_net(path: Path) -> Path:
    """Conv -> HardSwish -> (Transpose -> Conv) + Conv: a lopsided activation read on both sides of a commuting op."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * scale, name)
             for name, shape, scale in (("w0", (8, 3, 3, 3), 0.4), ("w1", (4, 8, 3, 3), 0.3),
                                        ("w2", (4, 8, 1, 1), 0.3))]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c0"], ["hs"], name="hardswish"),
        helper.make_node("Transpose", ["hs"], ["t"], name="transpose", perm=[0, 1, 3, 2]),
        helper.make_node("Conv", ["t", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["hs", "w2"], ["c2"], name="conv2"),
        helper.make_node("Add", ["c1", "c2"], ["y"], name="add"),
    ]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])
    model = helper.make_model(helper.make_graph(nodes, "hardswish_net", [x_info], [y_info], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def test_lopsided_activations_quantize_closer_to_fp32_with_their_observed_range(tmp_path):
    path = _hardswish_net(tmp_path / "hs.onnx")
    table = calibrate(path, "random", method="max", max_samples=64, batch_size=16)
    quantize(path, table, tmp_path / "ranged.onnx", encoding="onnxruntime-vnni")
    lopsided = dataclasses.replace(table, tensors={name: table.tensors[name] for name in ("hs", "t")})
    quantize(path, lopsided, tmp_path / "ranged_hs.onnx", encoding="onnxruntime-vnni")
    quantize(path, {name: stats.amax for name, stats in lopsided.tensors.items()}, tmp_path / "symmetric_hs.onnx",
             encoding="onnxruntime-vnni")
    model = onnx.load(tmp_path / "ranged.onnx")
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    pairs = {n.input[0]: (float(constants[n.input[1]]), int(constants[n.input[2]]))
             for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert table.tensors["hs"].min == pytest.approx(-0.375, abs=0.01)
    assert pairs["hs"][1] < 16, pairs["hs"]  # [-0.375, amax]: zero near the bottom, not at 128
    assert pairs["t"] == pairs["hs"], pairs  # rule 5: the same pair on both sides of the Transpose
    x = np.random.default_rng(5).standard_normal((32, 3, 8, 8)).astype(np.float32)
    reference = _run(path, x)
    errors = {name: np.abs(_run(tmp_path / f"{name}.onnx", x, fused=False) - reference).mean()
              for name in ("ranged_hs", "symmetric_hs")}
    assert errors["ranged_hs"] < 0.75 * errors["symmetric_hs"], errors  # about twice the levels where it matters
