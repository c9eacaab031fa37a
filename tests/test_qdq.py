"""Q/DQ insertion: TensorRT placement rules, the two encodings, axes, exclusions, opset upgrade."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.errors import UsageError
from trtopt.quantization.calibrate import calibrate
from trtopt.quantization.qdq import quantize

from conftest import make_residual_convnet


def _session(path: Path, level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
             optimized: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = level
    options.log_severity_level = 3
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _exact_amax(path: Path, x: np.ndarray) -> dict[str, float]:
    """amax of every tensor on exactly the inputs the test runs (no clipping: isolates Q/DQ placement)."""
    model = onnx.load(path)
    outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in node.output if name not in outputs)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = session.run(None, {model.graph.input[0].name: x})
    amax = {o.name: float(np.abs(v).max()) for o, v in zip(session.get_outputs(), values)}
    amax[model.graph.input[0].name] = float(np.abs(x).max())
    return amax


def _by_output(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def _consumers(model: onnx.ModelProto, name: str) -> list[onnx.NodeProto]:
    return [node for node in model.graph.node if name in node.input]


def _init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)


def _attr(node: onnx.NodeProto, name: str, default: int | None = None) -> int | None:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


@pytest.fixture(scope="module")
def convnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    folder = tmp_path_factory.mktemp("qdq")
    path = make_residual_convnet(folder / "net.onnx")
    table = calibrate(path, "random", method="max", max_samples=32, batch_size=16)
    return path, table


def _quantized(convnet, tmp_path: Path, encoding: str, **kwargs) -> tuple[Path, onnx.ModelProto]:
    path, table = convnet
    out = tmp_path / f"net.{encoding}.onnx"
    quantize(path, table, out, encoding=encoding, **kwargs)
    return out, onnx.load(out)


def test_tensorrt_encoding_is_symmetric_int8_with_zero_zero_points(convnet, tmp_path):
    _, model = _quantized(convnet, tmp_path, "tensorrt")
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) >= 8
    for node in qdq:
        zero_point = _init(model, node.input[2])
        assert zero_point.dtype == np.int8, node.name
        assert not zero_point.any(), f"{node.name} has a non-zero zero point"
        assert (_init(model, node.input[1]) > 0).all()
    assert not any(i.data_type == TensorProto.INT32 for i in model.graph.initializer), "TensorRT keeps biases float"


def test_tensorrt_placement_rules(convnet, tmp_path):
    _, model = _quantized(convnet, tmp_path, "tensorrt")
    producers = _by_output(model)
    conv_outputs = {n.output[0] for n in model.graph.node if n.op_type == "Conv"}
    # rule 1: every Conv/Gemm reads dequantized data and weights
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            assert producers[node.input[0]].op_type == "DequantizeLinear", node.name
            assert producers[node.input[1]].op_type == "DequantizeLinear", node.name
    # rule 2: no Q on conv outputs
    for name in conv_outputs:
        assert all(c.op_type != "QuantizeLinear" for c in _consumers(model, name)), name
    # rule 3: residual Add: the conv branch stays float (fuses), the skip branch is quantized
    add = next(n for n in model.graph.node if n.op_type == "Add")
    assert add.input[0] in conv_outputs
    assert producers[add.input[1]].op_type == "DequantizeLinear"
    # rule 5: MaxPool gets no Q/DQ of its own
    pool = next(n for n in model.graph.node if n.op_type == "MaxPool")
    assert producers[pool.input[0]].op_type != "DequantizeLinear"
    assert all(c.op_type != "QuantizeLinear" for c in _consumers(model, pool.output[0]))


def test_weight_axes_per_op(tmp_path):
    """Conv 0, ConvTranspose 1, Gemm transB=1 -> 0 / transB=0 -> 1, MatMul constant right operand -> last axis."""
    rng = np.random.default_rng(1)

    def w(name, shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "cw"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("ConvTranspose", ["c", "tw"], ["t"], name="deconv"),
        helper.make_node("Flatten", ["t"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "gw_t"], ["h1"], name="gemm_t", transB=1),
        helper.make_node("Gemm", ["h1", "gw"], ["h2"], name="gemm"),
        helper.make_node("MatMul", ["h2", "mw"], ["y"], name="matmul"),
    ]
    graph = helper.make_graph(
        nodes,
        "axes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [w("cw", (4, 2, 3, 3)), w("tw", (4, 5, 3, 3)), w("gw_t", (7, 320)), w("gw", (7, 6)), w("mw", (6, 3))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp_path / "axes.onnx"
    onnx.save(model, path)
    x = np.random.default_rng(2).standard_normal((4, 2, 6, 6)).astype(np.float32)
    quantize(path, _exact_amax(path, x), tmp_path / "q.onnx", encoding="tensorrt")
    q = onnx.load(tmp_path / "q.onnx")
    producers = _by_output(q)
    expected = {
        "conv": (0, 4),
        "deconv": (1, 5),
        "gemm_t": (0, 7),
        "gemm": (1, 6),
        "matmul": (1, 3),
    }  # (axis, channels)
    original = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in q.graph.node:
        if node.name in expected:
            dq = producers[node.input[1]]
            axis, channels = expected[node.name]
            assert _attr(dq, "axis") == axis, node.name
            scale = _init(q, dq.input[1])
            assert scale.shape == (channels,), node.name
            weights = _init(q, dq.input[0])
            assert weights.dtype == np.int8 and np.abs(weights).max() == 127
            shape = [1] * weights.ndim
            shape[axis] = -1
            restored = weights * scale.reshape(shape)
            source = original[node.input[1].replace("_dq", "")]
            assert np.abs(restored - source).max() <= scale.max() / 2 + 1e-6
    ref = _session(path).run(None, {"x": x})[0]
    # reference Q/DQ semantics: ONNX Runtime's fused S8S8 MatMul kernels saturate on AVX2 (see backends/onnxruntime.py)
    got = _session(tmp_path / "q.onnx", ort.GraphOptimizationLevel.ORT_DISABLE_ALL).run(None, {"x": x})[0]
    assert np.abs(ref - got).max() < 0.05 * np.abs(ref).max()


def test_onnxruntime_cpu_encoding_engages_integer_kernels(convnet, tmp_path):
    out, model = _quantized(convnet, tmp_path, "onnxruntime-cpu")
    producers = _by_output(model)
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            zero_point = _init(model, node.input[2])
            assert zero_point.dtype == np.uint8
            source = producers.get(node.input[0])
            if source is not None and source.op_type == "Relu":
                assert int(zero_point) == 0, f"{node.input[0]} is non-negative: full unsigned range"
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = [constants[n.input[0]] for n in model.graph.node
               if n.op_type == "DequantizeLinear" and constants.get(n.input[0], np.zeros(0, np.uint8)).dtype == np.int8]
    assert weights and all(np.abs(w).max() <= 63 for w in weights), "7-bit weights avoid AVX2 int16 saturation"
    assert any(i.data_type == TensorProto.INT32 for i in model.graph.initializer), "biases quantized to int32"
    optimized = tmp_path / "opt.onnx"
    _session(out, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, optimized)
    ops = [n.op_type for n in onnx.load(optimized).graph.node]
    assert ops.count("QLinearConv") == 3 and "QLinearAdd" in ops and "QGemm" in ops, ops


def test_both_encodings_run_close_to_fp32(convnet, tmp_path):
    path, _ = convnet
    x = np.random.default_rng(3).standard_normal((64, 3, 16, 16)).astype(np.float32)
    ref = _session(path).run(None, {"input": x})[0]
    outputs = {}
    for encoding in ("tensorrt", "onnxruntime-cpu"):
        out, _ = _quantized(convnet, tmp_path, encoding)
        outputs[encoding] = _session(out).run(None, {"input": x})[0]
        cos = (ref * outputs[encoding]).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(outputs[encoding], axis=1)
        assert cos.mean() > 0.995, encoding
    agree = (outputs["tensorrt"].argmax(1) == outputs["onnxruntime-cpu"].argmax(1)).mean()
    assert agree >= 0.9


def test_exclusions_keep_nodes_float(convnet, tmp_path):
    _, model = _quantized(convnet, tmp_path, "tensorrt", exclude_nodes=["conv1"], exclude_op_types=["Gemm"])
    producers = _by_output(model)
    for node in model.graph.node:
        if node.name in ("conv1", "fc"):
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input), (
                node.name
            )
        if node.name == "conv2":
            assert producers[node.input[0]].op_type == "DequantizeLinear"
    with pytest.raises(UsageError, match="no node named"):
        _quantized(convnet, tmp_path, "tensorrt", exclude_nodes=["nope"])


def test_missing_scales_stay_float_and_are_reported(convnet, tmp_path):
    path, table = convnet
    amax = {name: stats.amax for name, stats in table.tensors.items() if name not in ("flat", "gap")}
    result = quantize(path, amax, tmp_path / "partial.onnx", encoding="tensorrt")
    assert "flat" in result.missing_scales
    fc = next(n for n in onnx.load(tmp_path / "partial.onnx").graph.node if n.name == "fc")
    assert fc.input[0] == "flat"


def test_opset_upgraded_for_per_channel(tmp_path):
    path = make_residual_convnet(tmp_path / "old.onnx", opset=11)
    amax = {"input": 4.0, "r0": 3.0, "r1": 3.0, "c2": 3.0, "flat": 2.0}
    result = quantize(path, amax, tmp_path / "q.onnx", encoding="tensorrt")
    assert result.opset >= 13
    model = onnx.load(tmp_path / "q.onnx")
    assert any(n.op_type == "DequantizeLinear" and _attr(n, "axis") == 0 for n in model.graph.node)
    _session(tmp_path / "q.onnx").run(None, {"input": np.zeros((2, 3, 16, 16), np.float32)})


def test_scale_table_from_another_model_is_refused(convnet, tmp_path):
    _, table = convnet
    other = make_residual_convnet(tmp_path / "other.onnx", seed=5)
    with pytest.raises(UsageError, match="sha256"):
        quantize(other, table, tmp_path / "q.onnx")
    assert not (tmp_path / "q.onnx").exists()


def test_lenet_tensorrt_encoding_accuracy_close_to_onnxruntime_encoding(trained_lenet, tmp_path):
    """Same calibration, two encodings: digits test accuracy within a point of each other and of FP32."""
    from trtopt.backends.onnxruntime import OnnxRuntimeRunner
    from trtopt.data.digits import load_digits_split
    from trtopt.data.sources import open_source

    with OnnxRuntimeRunner(trained_lenet.onnx) as runner:
        val_split = open_source("digits", runner.inputs, part="calibration")
    table = calibrate(trained_lenet.onnx, val_split, method="entropy")
    x, y = load_digits_split("test")
    accuracy = {"fp32": (_session(trained_lenet.onnx).run(None, {"input": x})[0].argmax(1) == y).mean()}
    for encoding in ("tensorrt", "onnxruntime-cpu"):
        out = quantize(trained_lenet.onnx, table, tmp_path / f"{encoding}.onnx", encoding=encoding).path
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        if encoding == "tensorrt":  # what the ORT backend does for this encoding (exact Q/DQ math)
            options.add_session_config_entry("session.disable_quant_qdq", "1")
        session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
        accuracy[encoding] = (session.run(None, {"input": x})[0].argmax(1) == y).mean()
    assert abs(accuracy["tensorrt"] - accuracy["onnxruntime-cpu"]) <= 0.01, accuracy
    assert accuracy["fp32"] - min(accuracy["tensorrt"], accuracy["onnxruntime-cpu"]) <= 0.01, accuracy


def test_quantize_verb(convnet, tmp_path):
    import subprocess
    import sys

    path, table = convnet
    table_file = table.save(tmp_path / "table.json")
    ok = subprocess.run([sys.executable, "-m", "trtopt", "quantize", str(path), "--calib-table", str(table_file), "-o",
                         str(tmp_path / "q.onnx"), "--encoding", "tensorrt", "--exclude-op-types", "Gemm"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "tensorrt encoding" in ok.stdout and (tmp_path / "q.onnx").is_file()
    assert "INT8 coverage: 3 of 4 weighted layers quantized" in ok.stdout
    assert "float: 1 excluded by --exclude-op-types" in ok.stdout and "covers little" not in ok.stderr
    fc = next(n for n in onnx.load(tmp_path / "q.onnx").graph.node if n.op_type == "Gemm")
    assert fc.input[0] == "flat"
    missing = subprocess.run([sys.executable, "-m", "trtopt", "quantize", str(path), "-o", str(tmp_path / "x.onnx")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "--calib-table" in missing.stderr


def test_a_quantized_tensor_read_inside_an_if_branch_stays_float_there(tmp_path):
    """ONNX Runtime's rule 6 quantizes a Conv's output for its consumers; one of them inside an If body
    (a main-graph value read from a branch) keeps reading the float tensor instead of breaking the pass."""
    rng = np.random.default_rng(0)

    def branch(tag: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("Relu", ["c"], [f"{tag}_y"], name=f"{tag}_relu")], tag, [],
                                 [helper.make_tensor_value_info(f"{tag}_y", TensorProto.FLOAT, [1, 4, 6, 6])])

    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("ReduceMean", ["x"], ["m"], name="mean", keepdims=0),
             helper.make_node("Greater", ["m", "zero"], ["positive"], name="positive"),
             helper.make_node("If", ["positive"], ["y"], name="switch", then_branch=branch("then"),
                              else_branch=branch("else")),
             helper.make_node("MaxPool", ["c"], ["p"], name="pool", kernel_shape=[2, 2]),
             helper.make_node("Add", ["p", "p"], ["z"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 5, 5])],
                              initializer=[numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
                                                                   "w"),
                                           numpy_helper.from_array(np.float32(0), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, tmp_path / "if.onnx")
    result = quantize(tmp_path / "if.onnx", {"x": 4.0, "c": 12.0, "p": 12.0}, tmp_path / "q.onnx",
                      encoding="onnxruntime-cpu")
    assert "c" in result.activations  # quantized for the main-graph MaxPool
    quantized = onnx.load(tmp_path / "q.onnx")
    switch = next(node for node in quantized.graph.node if node.op_type == "If")
    assert all(body.g.node[0].input == ["c"] for body in switch.attribute)  # both branches read the float "c"
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    expected = _session(tmp_path / "if.onnx").run(None, {"x": x})
    got = _session(tmp_path / "q.onnx").run(None, {"x": x})
    # INT8 conv, float branch: both outputs within a few INT8 steps of FP32
    assert all(np.abs(e - g).max() < 0.03 * np.abs(e).max() for e, g in zip(expected, got))
