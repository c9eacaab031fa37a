"""Any ONNX model a user brings: old IR, integer inputs, dynamic shapes, subgraphs, external data.

Real models only: the model zoo's classic architectures as the ``onnx`` package ships them, a
torch-exported Transformer encoder, and small graphs written here that have exactly the trait a
bug needs (dynamic height/width, an initializer listed as an input, an ``If`` with Casts, an
output without a declared shape, weights in an external file). Every build goes through the real
pipeline and ONNX Runtime.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

from trtopt.backends.onnxruntime import OnnxRuntimeRunner
from trtopt.errors import UsageError
from trtopt.pipeline import build
from trtopt.quantization.coverage import int8_coverage
from trtopt.quantization.fp16 import convert_fp16
from trtopt.quantization.modelio import prepared_source
from trtopt.quantization.qdq import quantize
from trtopt.repository import load

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import corpus_models  # noqa: E402

# INT8 of the three with 60-550 MB of generated fully-connected weights takes 5-25 s each on two
# cores; they run in scripts/model_corpus.py, the other six here.
LIGHT_INT8 = ("densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet")


def _fp32_outputs(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path)).run(None, feed)


def _classic_feed(name: str) -> dict[str, np.ndarray]:
    return corpus_models.classic(name).heldout  # type: ignore[return-value]


@pytest.mark.parametrize("name", corpus_models.CLASSIC)
def test_classic_zoo_converts_to_fp16_that_onnx_runtime_loads(name, tmp_path):
    """convert_fp16 loads every model it writes in ONNX Runtime (the reported 'element type mismatch');
    the six lighter ones also run and match FP32 here (all nine run in scripts/model_corpus.py)."""
    with prepared_source(corpus_models.classic_path(name)) as work:
        assert work != corpus_models.classic_path(name), "IR 3 initializer inputs must be made constants"
        result = convert_fp16(work, tmp_path / "model.fp16.onnx")
        if name not in LIGHT_INT8:
            return
        feed = _classic_feed(name)
        expected = _fp32_outputs(work, feed)
    got = ort.InferenceSession(str(result.path)).run(None, feed)
    assert np.isfinite(got[0]).all()
    np.testing.assert_allclose(got[0], expected[0], rtol=0.02, atol=1e-3)


@pytest.mark.parametrize("name", LIGHT_INT8)
def test_classic_zoo_quantizes_to_int8_with_weights_and_runs(name, tmp_path):
    feed = _classic_feed(name)
    with prepared_source(corpus_models.classic_path(name)) as work:
        from trtopt.quantization.targets import calibration_targets

        targets = calibration_targets(onnx.load(str(work)))
        result = quantize(work, dict.fromkeys(targets, 8.0), tmp_path / "model.int8.onnx")
    assert result.weights, "generated (ConstantOfShape) weights must be folded and quantized"
    coverage = int8_coverage(onnx.load(result.path))  # Inception v1's classifier weight is a Reshape of one
    assert coverage.quantized_layers == coverage.weighted_layers, coverage.float_layers
    got = ort.InferenceSession(str(result.path)).run(None, feed)
    assert np.isfinite(got[0]).all()


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_classic_squeezenet_builds_from_the_cli(precision, tmp_path):
    """The reported failures: INT8 'missing input(s) [...]' naming initializers; FP16 'element type mismatch'."""
    extra = ["--int8", "--calib-data", "random", "--calib-samples", "2"] if precision == "int8" else ["--fp16"]
    proc = run_cli("build", corpus_models.classic_path("squeezenet"), *extra, "--accuracy-samples", "2",
                   "--engines-dir", tmp_path / "engines", "--name", "sq")
    assert proc.returncode == 0, proc.stderr
    with load(tmp_path / "engines" / "sq") as runner:
        assert [i.name for i in runner.inputs] == ["data_0"]
        out = runner.infer(_classic_feed("squeezenet"))
    assert np.isfinite(next(iter(out.values()))).all()


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory) -> Path:
    """A BERT-like encoder exported by torch: int64 ids and attention mask."""
    pytest.importorskip("torch")
    corpus_models.CACHE = tmp_path_factory.mktemp("corpus")
    return corpus_models.encoder(vocab=50, seq=8, width=16, layers=1).path


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_integer_input_encoder_builds_with_input_ranges(encoder_path, precision, tmp_path):
    result = build(encoder_path, precision=precision, engines_dir=tmp_path, calib_data="random",
                   input_ranges="ids:0:49,mask:0:1", calib_samples=16, accuracy_samples=16, batch_size=8)
    assert result.accuracy["cosine_similarity"] > 0.99
    assert result.accuracy["top1_agreement"] > 0.9
    if precision == "int8":
        assert result.manifest["model"]["quantized_weights"] > 0  # the float part was quantized
        qdq = onnx.load(str(result.engine_dir / "model.int8.onnx")).graph
        producers = {out: node.op_type for node in qdq.node for out in node.output}
        float_readers = [n for n in qdq.node if n.op_type in ("Softmax", "LayerNormalization")]
        assert float_readers and all(producers.get(n.input[0]) != "DequantizeLinear" for n in float_readers)
    with result.load() as runner:
        ids = np.arange(16, dtype=np.int64).reshape(2, 8) % 50
        out = runner.infer({"ids": ids, "mask": np.ones_like(ids)})
    assert out["logits"].shape == (2, 8, 50)


def test_budget_search_reads_integer_inputs_with_the_build_ranges(encoder_path, tmp_path):
    """The mixed-precision search's held-out data gets the same --input-range as the final check."""
    result = build(encoder_path, precision="int8", engines_dir=tmp_path, calib_data="random",
                   input_ranges="ids:0:49,mask:0:1", calib_samples=16, accuracy_samples=16, batch_size=8,
                   accuracy_budget="cosine=0.999")
    assert result.accuracy["cosine_similarity"] >= 0.999
    assert "mixed_precision" in result.manifest


def test_random_data_for_an_integer_input_needs_a_range(encoder_path, tmp_path):
    proc = run_cli("build", encoder_path, "--engines-dir", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("trtopt build: error: random data for integer input")
    assert "--input-range ids:LOW:HIGH" in proc.stderr


def _dynamic_convnet(path: Path) -> Path:
    """x: float32[N, 3, H, W] -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> logits[N, 4]."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (64, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.1, (4, 64)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "dynamic", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                               ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def dynamic_model(tmp_path) -> Path:
    return _dynamic_convnet(tmp_path / "dynamic.onnx")


@pytest.fixture
def text_lines(tmp_path) -> Path:
    """13 samples of one definite shape [3, 24, 40]."""
    path = tmp_path / "lines.npz"
    np.savez(path, x=np.random.default_rng(1).normal(size=(13, 3, 24, 40)).astype(np.float32))
    return path


def test_dynamic_spatial_shapes_come_from_calibration_data(dynamic_model, text_lines):
    """A backend that needs a profile (TensorRT) gets H and W from the data; explicit flags win."""
    from trtopt.data.sources import open_source
    from trtopt.shapes import derive_profile, observe_shapes

    with OnnxRuntimeRunner(dynamic_model) as runner:
        inputs = runner.inputs
    observed = observe_shapes(batch.feed for batch in open_source(str(text_lines), inputs, batch_size=4))
    profile = derive_profile(inputs, observed=observed)
    assert (profile.min["x"], profile.opt["x"], profile.max["x"]) == ((1, 3, 24, 40), (32, 3, 24, 40), (32, 3, 24, 40))
    with pytest.raises(UsageError, match="dimension 2 .* is dynamic"):
        derive_profile(inputs)
    widened = derive_profile(inputs, max_shapes="x:4x3x32x64", min_shapes="x:1x3x16x16", observed=observed)
    assert widened.max["x"] == (4, 3, 32, 64)


def test_int8_on_onnx_runtime_needs_no_shapes_for_dynamic_spatial_data(dynamic_model, text_lines, tmp_path):
    result = build(dynamic_model, precision="int8", calib_data=str(text_lines), engines_dir=tmp_path)
    assert result.accuracy["samples"] == 2 and result.manifest["io"]["profile"]["min"] == {}


def test_explicit_shapes_are_honoured_by_generated_data_and_short_batches(dynamic_model, text_lines, tmp_path):
    fp32 = build(dynamic_model, engines_dir=tmp_path, shapes="x:2x3x16x32", accuracy_samples=8)
    assert fp32.manifest["io"]["profile"]["opt"]["x"] == [2, 3, 16, 32]
    ranged = build(dynamic_model, precision="fp16", engines_dir=tmp_path, min_shapes="x:1x3x8x8",
                   opt_shapes="x:4x3x16x16", max_shapes="x:4x3x32x32", accuracy_samples=8)
    assert ranged.accuracy["samples"] == 8
    # a batch of 8 pinned by --shapes; the held-out part of 13 samples is 2: padded to 8, not refused
    pinned = build(dynamic_model, precision="int8", engines_dir=tmp_path, calib_data=str(text_lines),
                   shapes="x:8x3x24x40", name="pinned")
    assert pinned.accuracy["samples"] == 2


def test_fp32_on_onnx_runtime_needs_no_shapes_with_data(dynamic_model, text_lines, tmp_path):
    result = build(dynamic_model, engines_dir=tmp_path, val_data=str(text_lines))
    assert result.accuracy["samples"] == 13
    with result.load() as runner:  # the engine runs any spatial size
        assert runner.infer({"x": np.zeros((1, 3, 50, 70), np.float32)})["logits"].shape == (1, 4)


def test_calibration_data_outside_explicit_shapes_is_one_clear_line(dynamic_model, text_lines, tmp_path):
    proc = run_cli("build", dynamic_model, "--int8", "--calib-data", text_lines, "--shapes", "x:8x3x48x320",
                   "--engines-dir", tmp_path)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("trtopt build: error: data ") and "'x' dimension 2 is 24..24" in line, proc.stderr
    assert "--shapes" in line


def _old_ir_model(path: Path) -> Path:
    """IR 3 / opset 9: the weight `w` is an initializer listed as a graph input too (old exporters)."""
    rng = np.random.default_rng(2)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (4, 6)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1), helper.make_node("Relu", ["y"], ["out"]),
         helper.make_node("Softmax", ["y"], ["probs"])], "old",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 6]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 6]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 4]),
         helper.make_tensor_value_info("probs", TensorProto.FLOAT, [None, 4])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 3
    onnx.save(model, path)
    return path


def test_old_ir_initializer_input_is_a_constant_unless_fed(tmp_path, caplog):
    model = _old_ir_model(tmp_path / "old.onnx")
    x = np.random.default_rng(3).normal(size=(20, 6)).astype(np.float32)
    np.savez(tmp_path / "plain.npz", x=x)
    with caplog.at_level(logging.INFO, logger="trtopt"):
        result = build(model, precision="int8", calib_data=str(tmp_path / "plain.npz"), engines_dir=tmp_path)
    calibrating = [r.getMessage() for r in caplog.records if r.getMessage().startswith("calibrating ")]
    # names the user's file, not the prepared temporary copy with the initializer inputs made constants
    assert len(calibrating) == 1 and f" of {model} on " in calibrating[0], calibrating
    assert [i["name"] for i in result.manifest["io"]["inputs"]] == ["x"]
    assert set(result.accuracy["outputs"]) == {"out", "probs"}  # every output checked
    fed = np.full((4, 6), 0.25, np.float32)
    np.savez(tmp_path / "fed.npz", x=x, w=fed)
    fed_result = build(model, calib_data=str(tmp_path / "fed.npz"), engines_dir=tmp_path, name="fed")
    with fed_result.load() as runner:
        out = runner.infer({"x": x[:2]})["out"]
    np.testing.assert_allclose(out, np.maximum(x[:2] @ fed.T, 0), rtol=1e-5)


def test_old_ir_feed_of_the_wrong_shape_is_one_clear_line(tmp_path):
    model = _old_ir_model(tmp_path / "old.onnx")
    np.savez(tmp_path / "bad.npz", x=np.zeros((5, 6), np.float32), w=np.zeros((6, 4), np.float32))
    proc = run_cli("build", model, "--calib-data", tmp_path / "bad.npz", "--engines-dir", tmp_path)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("trtopt build: error:") and "input 'w' is an initializer of the model" in line
    assert "float32[4x6]" in line and "[6, 4]" in line


def _if_model(path: Path) -> Path:
    """An If on an int64 scalar: both branches Cast and compute on an outer float tensor (Silero-like)."""
    rng = np.random.default_rng(4)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (8, 8)).astype(np.float32), "w")

    def branch(name: str, scale: float) -> onnx.GraphProto:
        nodes = [helper.make_node("MatMul", ["h", "w"], [f"{name}_m"]),
                 helper.make_node("Cast", [f"{name}_m"], [f"{name}_d"], to=TensorProto.DOUBLE),
                 helper.make_node("Cast", [f"{name}_d"], [f"{name}_f"], to=TensorProto.FLOAT),
                 helper.make_node("Mul", [f"{name}_f", f"{name}_s"], [f"{name}_out"])]
        scale_init = numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s")
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT,
                                                                                 [None, None])], [scale_init])

    nodes = [helper.make_node("Relu", ["x"], ["h"]),
             helper.make_node("Equal", ["sr", "k16"], ["is16"]),
             helper.make_node("If", ["is16"], ["y"], then_branch=branch("then", 1.0), else_branch=branch("else", 2.0)),
             helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["srf", "x"], ["z"])]
    graph = helper.make_graph(
        nodes, "with_if",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [None, None])],  # no declared dims
        [w, numpy_helper.from_array(np.array(16000, np.int64), "k16")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_if_subgraphs_casts_and_a_scalar_input_build(precision, tmp_path):
    model = _if_model(tmp_path / "if.onnx")
    np.savez(tmp_path / "audio.npz", x=np.random.default_rng(5).normal(size=(10, 8)).astype(np.float32),
             sr=np.array(16000, np.int64))
    result = build(model, precision=precision, calib_data=str(tmp_path / "audio.npz"), engines_dir=tmp_path,
                   batch_size=4)
    assert set(result.accuracy["outputs"]) == {"y", "z"}  # every output checked, the shapeless one too
    assert result.accuracy["cosine_similarity"] > 0.99
    with result.load() as runner:
        out = runner.infer({"x": np.ones((3, 8), np.float32), "sr": np.array(16000, np.int64)})
    assert out["y"].shape == (3, 8)


def test_external_data_travels_with_every_precision(tmp_path):
    source = _dynamic_convnet(tmp_path / "inline.onnx")
    model = onnx.load(source)
    external = tmp_path / "ext" / "model.onnx"
    external.parent.mkdir()
    onnx.save_model(model, external, save_as_external_data=True, location="weights.bin", size_threshold=0)
    np.savez(tmp_path / "data.npz", x=np.random.default_rng(6).normal(size=(10, 3, 12, 12)).astype(np.float32))
    for precision in ("fp32", "fp16", "int8"):
        result = build(external, precision=precision, calib_data=str(tmp_path / "data.npz"),
                       engines_dir=tmp_path / "engines")
        assert result.accuracy["cosine_similarity"] > 0.99
        if precision == "int8":  # the compute was measured on a run that read the external weights in place
            assert result.manifest["model"]["int8_coverage"]["macs_per_sample"] > 0
        with result.load() as runner:
            assert runner.infer({"x": np.ones((1, 3, 12, 12), np.float32)})["logits"].shape == (1, 4)
    for precision in ("fp32", "fp16", "int8"):  # the weights stay external in the engine folder too
        folder = tmp_path / "engines" / f"model-{precision}"
        assert (folder / f"model.{precision}.onnx.data").is_file() and (folder / "model.ort.onnx.data").is_file()


def test_a_model_without_float_computation_is_refused_with_that_reason(tmp_path):
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["c"])], "ints",
                              [helper.make_tensor_value_info("a", TensorProto.INT64, [2]),
                               helper.make_tensor_value_info("b", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("c", TensorProto.INT64, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "ints.onnx")
    with pytest.raises(UsageError, match="no floating-point computation"):
        build(tmp_path / "ints.onnx", engines_dir=tmp_path)


def test_fp16_keeps_a_constant_node_beyond_fp16_range(tmp_path):
    """PP-OCR's detector (paddle2onnx) holds BatchNorm variances of 1e7..1e8 in Constant nodes: converted to
    FP16 they become inf and the probability map flips on 6% of the pixels."""
    channels = 4
    constants = {"scale": np.ones(channels), "bias": np.zeros(channels), "mean": np.full(channels, 100.0),
                 "var": np.array([1e7, 4e7, 8e7, 1e8])}
    nodes = [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(v.astype(np.float32), name))
             for name, v in constants.items()]
    nodes.append(helper.make_node("BatchNormalization", ["x", *constants], ["y"]))
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels, 2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]), tmp_path / "bn.onnx")
    result = convert_fp16(tmp_path / "bn.onnx", tmp_path / "bn16.onnx")
    x = np.random.default_rng(7).normal(100, 3000, (2, channels, 2)).astype(np.float32)
    expected = _fp32_outputs(tmp_path / "bn.onnx", {"x": x})[0]
    got = ort.InferenceSession(str(result.path)).run(None, {"x": x})[0]
    assert "Constant_3" in result.kept_fp32
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3)
