"""FP16 conversion: float32 I/O, FP16 weights and compute, and the rules that keep nodes FP32."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.errors import UsageError
from trtopt.quantization.fp16 import convert_fp16


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _save(tmp_path: Path, nodes, inits, in_shape, out_shape, name="m.onnx") -> Path:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, tmp_path / name)
    return tmp_path / name


def _node_dtype(model: onnx.ModelProto, node_name: str) -> int:
    """Element type a node computes in, read from the (inferred) type of its first output."""
    inferred = onnx.shape_inference.infer_shapes(model)
    node = next(n for n in inferred.graph.node if n.name == node_name)
    infos = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
    return infos[node.output[0]].type.tensor_type.elem_type


def test_residual_convnet_fp16_keeps_float32_io(residual_convnet, tmp_path):
    result = convert_fp16(residual_convnet, tmp_path / "fp16.onnx")
    model = onnx.load(result.path)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    weights = {i.name: i.data_type for i in model.graph.initializer}
    assert weights["conv0.w"] == TensorProto.FLOAT16 and weights["fc.w"] == TensorProto.FLOAT16
    assert _node_dtype(model, "conv1") == TensorProto.FLOAT16
    assert result.kept_fp32 == {}
    x = np.random.default_rng(0).standard_normal((32, 3, 16, 16)).astype(np.float32)
    ref, got = _run(residual_convnet, x), _run(result.path, x)
    assert got.dtype == np.float32
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.97
    assert np.abs(ref - got).max() < 0.02 * np.abs(ref).max()


def test_fp16_io_option(residual_convnet, tmp_path):
    result = convert_fp16(residual_convnet, tmp_path / "fp16io.onnx", keep_io_types=False)
    model = onnx.load(result.path)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16


def test_softmax_and_big_constants_stay_fp32(tmp_path):
    big = numpy_helper.from_array(np.full((8,), 1e5, np.float32), "big")
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
        helper.make_node("Mul", ["h", "big"], ["scaled"], name="scale_up"),  # values ~1e5: FP16 overflows
        helper.make_node("Softmax", ["scaled"], ["y"], name="softmax", axis=-1),
    ]
    path = _save(tmp_path, nodes, [w, big], ["n", 8], ["n", 8])
    result = convert_fp16(path, tmp_path / "fp16.onnx")
    assert set(result.kept_fp32) == {"scale_up", "softmax"}
    assert "65504" in result.kept_fp32["scale_up"] and "Softmax" in result.kept_fp32["softmax"]
    model = onnx.load(result.path)
    assert _node_dtype(model, "matmul") == TensorProto.FLOAT16
    assert _node_dtype(model, "scale_up") == TensorProto.FLOAT
    x = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32) * 1e-3
    got = _run(result.path, x)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, _run(path, x), atol=5e-3)


def test_calibration_ranges_and_large_reductions(tmp_path):
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("ReduceSum", ["r"], ["s"], name="big_sum", keepdims=0),
        helper.make_node("ReduceMean", ["r"], ["m"], name="small_mean", axes=[0], keepdims=1),  # 2 values each
        helper.make_node("Add", ["m", "s"], ["y"], name="add"),
    ]
    path = _save(tmp_path, nodes, [], [2, 10000], [1, 10000])
    plain = convert_fp16(path)
    assert "big_sum" in plain.kept_fp32 and "small_mean" not in plain.kept_fp32
    ranged = convert_fp16(path, scales={"r": 4.0, "y": 20000.0})
    assert "add" in ranged.kept_fp32 and "2e+04" in ranged.kept_fp32["add"]
    assert "relu" not in ranged.kept_fp32


def test_user_exclusions_and_bad_input(residual_convnet, tmp_path):
    result = convert_fp16(residual_convnet, exclude_op_types=["Gemm"], exclude_nodes=["conv0"])
    assert result.kept_fp32 == {"conv0": "excluded by the user", "fc": "excluded by the user"}
    with pytest.raises(UsageError, match="no node named"):
        convert_fp16(residual_convnet, exclude_nodes=["missing"])
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(residual_convnet.read_bytes()[:200])
    with pytest.raises(UsageError, match="not a valid ONNX model"):
        convert_fp16(broken, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_lenet_fp16_agrees_with_fp32_on_digits(trained_lenet, tmp_path):
    """Acceptance: FP16 top-1 agreement with FP32 >= 99.5% on the digits test set."""
    from trtopt.data.digits import load_digits_split

    x, _ = load_digits_split("test")
    result = convert_fp16(trained_lenet.onnx, tmp_path / "lenet.fp16.onnx")
    agreement = (_run(trained_lenet.onnx, x).argmax(1) == _run(result.path, x).argmax(1)).mean()
    assert agreement >= 0.995, agreement
