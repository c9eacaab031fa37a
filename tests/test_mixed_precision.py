"""Sensitivity, the far-off warning and budgeted mixed precision on a graph with a planted hypersensitive layer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnx import TensorProto, helper, numpy_helper

from conftest import run_cli
from trtopt.errors import UsageError
from trtopt.repository import load

FEATURES, HIDDEN, CLASSES = 16, 32, 10


def make_planted_mlp(path: Path, seed: int = 0) -> Path:
    """x -> fc_a -> Relu -> fc_b -> fc_c (logits). fc_b's output carries one constant channel at ~1000.

    Any calibration must keep that channel's range (it is every 32nd value), so the INT8 step of
    fc_c's input is ~8 while its other channels are ~1: quantizing fc_c's input rounds them away.
    fc_c is the planted hypersensitive layer; fc_a and fc_b quantize harmlessly.
    """
    rng = np.random.default_rng(seed)
    w_a = rng.normal(size=(FEATURES, HIDDEN)).astype(np.float32) / 4
    w_b = rng.normal(size=(HIDDEN, HIDDEN)).astype(np.float32) / 4
    b_b = np.zeros(HIDDEN, np.float32)
    b_b[0] = 1000.0
    w_b[:, 0] *= 0.01
    w_c = rng.normal(size=(HIDDEN, CLASSES)).astype(np.float32)
    w_c[0] = 1e-4
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in [
            (w_a, "w_a"),
            (np.zeros(HIDDEN, np.float32), "b_a"),
            (w_b, "w_b"),
            (b_b, "b_b"),
            (w_c, "w_c"),
            (np.zeros(CLASSES, np.float32), "b_c"),
        ]
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w_a", "b_a"], ["a"], name="fc_a"),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Gemm", ["ra", "w_b", "b_b"], ["h"], name="fc_b"),
        helper.make_node("Gemm", ["h", "w_c", "b_c"], ["logits"], name="fc_c"),
    ]
    graph = helper.make_graph(
        nodes,
        "planted",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data.npz"
    np.savez(data, x=np.random.default_rng(1).normal(size=(160, FEATURES)).astype(np.float32))
    return make_planted_mlp(tmp_path / "planted.onnx"), data


def test_sensitivity_finds_the_planted_layer_first(planted, tmp_path):
    model, data = planted
    out = tmp_path / "sens.json"
    run = run_cli(
        "sensitivity",
        str(model),
        "--calib-data",
        str(data),
        "--samples",
        "32",
        "--threads",
        "1",
        "--json",
        str(out),
        "--html",
        str(tmp_path / "sens.html"),
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    ranked = [entry["node"] for entry in result["layers"]]
    assert ranked[0] == "fc_c" and set(ranked) == {"fc_a", "fc_b", "fc_c"}
    first = result["layers"][0]
    # alone in INT8 it breaks the logits; alone in float it restores them
    assert first["int8_alone"]["accuracy"]["outputs"]["logits"]["agreement"] < 0.7
    assert first["float_alone"]["accuracy"]["outputs"]["logits"]["agreement"] > 0.9
    assert "| 1 | fc_c | Gemm |" in run.stdout
    page = (tmp_path / "sens.html").read_text()
    assert "<img alt='per-layer sensitivity'" in page and "<td>fc_c</td>" in page


def test_build_warns_loudly_when_far_off_and_can_be_silenced(planted, tmp_path):
    model, data = planted
    engines = tmp_path / "engines"
    common = ("build", str(model), "--int8", "--calib-data", str(data), "--engines-dir", str(engines), "--threads", "1")
    loud = run_cli(*common, "--name", "loud")
    assert loud.returncode == 0, loud.stderr
    assert "FAR OFF FP32" in loud.stderr and "agreement" in loud.stderr
    timing = json.loads((engines / "loud" / "manifest.json").read_text())["timing"]
    speed = f"speed vs FP32: {timing['speedup']:.2f}x ({timing['speed_vs_fp32']}; batch of"
    assert speed in loud.stdout and f"fastest of {timing['timing_rounds']} interleaved rounds" in loud.stdout
    assert ("slower than FP32 here" in loud.stderr) == timing["slower_than_fp32"]
    far_off = json.loads((engines / "loud" / "manifest.json").read_text())["accuracy"]["far_off"]
    assert far_off and "logits" in far_off[0]
    quiet = run_cli(*common, "--name", "quiet", "--accept-accuracy-loss")
    assert quiet.returncode == 0 and "FAR OFF" not in quiet.stderr
    manifest = json.loads((engines / "quiet" / "manifest.json").read_text())
    assert manifest["accuracy"]["far_off"] == far_off and manifest["accuracy"]["far_off_accepted"] is True


def test_budgeted_build_keeps_the_planted_layer_float(planted, tmp_path):
    from trtopt.pipeline import build

    model, data = planted
    result = build(
        model,
        precision="int8",
        calib_data=str(data),
        engines_dir=tmp_path,
        threads=1,
        accuracy_budget="agreement=0.95,snr=20,speedup=0.05",
        sensitivity=True,
        backend="onnxruntime",
    )
    mixed = result.manifest["mixed_precision"]
    assert [entry["node"] for entry in mixed["kept_float"]] == ["fc_c"]
    assert mixed["evaluations"] >= 2 and mixed["seconds"] > 0 and mixed["float_precision"] == "fp32"
    assert mixed["kept_float"][0]["macs"] == HIDDEN * CLASSES and mixed["kept_float"][0]["reason"]
    assert mixed["latency_source"].startswith("measured") and mixed["speedup"] > 0
    assert mixed["cost_vs_calibration"] == pytest.approx(mixed["seconds"] / mixed["calibration_seconds"], rel=0.05)
    # three layers, three one-layer blocks probed INT8 alone; greedy over their ranking; the choice timed
    phases = [entry["phase"] for entry in mixed["tried"]]
    assert phases[:4] == ["int8", "probe", "probe", "probe"] and phases[-1] == "final" and len(phases) <= 9
    assert set(phases[4:-1]) <= {"greedy", "trim"}
    # accuracy-only steps run untimed; the full budget (speedup included) is judged on timed variants
    assert all((entry["speedup"] is not None) == (entry["phase"] in ("int8", "final")) for entry in mixed["tried"])
    harms = {block["first"]: block["harm"] for block in mixed["blocks"]}
    assert harms["fc_c"] > 10 * max(harms["fc_a"], harms["fc_b"])
    assert result.manifest["sensitivity"]["top"][0]["node"] == "fc_c"
    assert len(json.loads((result.engine_dir / "sensitivity.json").read_text())["layers"]) == 3
    assert result.manifest["accuracy"]["top1_agreement"] >= 0.95 and not result.manifest["accuracy"]["far_off"]
    timing = result.manifest["timing"]  # speed vs FP32 timed in interleaved rounds; slower only when clear
    assert timing["speedup"] == pytest.approx(timing["fp32_fastest_ms"] / timing["fastest_ms"], rel=1e-3)
    assert timing["timing_rounds"] >= 5 and timing["fastest_ms"] <= timing["median_ms"]
    assert timing["slower_than_fp32"] == (timing["speed_vs_fp32"] == "slower")
    quantized = onnx.load(result.engine_dir / result.manifest["model"]["file"])
    fc_c = next(n for n in quantized.graph.node if n.name == "fc_c")
    assert not any(name.endswith("_dq") for name in fc_c.input)  # float inputs and weights
    with load(result.engine_dir) as runner:
        assert runner.infer({"x": np.zeros((2, FEATURES), np.float32)})["logits"].shape == (2, CLASSES)


def test_unmeetable_budget_fails_with_the_best_reached_and_keeps_nothing(planted, tmp_path):
    model, data = planted
    engines = tmp_path / "engines"
    run = run_cli(
        "build",
        str(model),
        "--int8",
        "--calib-data",
        str(data),
        "--engines-dir",
        str(engines),
        "--name",
        "never",
        "--threads",
        "1",
        "--accuracy-budget",
        "agreement=0.95,speedup=1000",
    )
    assert run.returncode == 1
    assert "no INT8/float assignment meets the accuracy budget" in run.stderr and "best reached" in run.stderr
    assert "speedup" in run.stderr and "nothing was written" in run.stderr
    with pytest.raises(UsageError):
        load(engines / "never")
    assert not engines.exists() or not [p for p in engines.iterdir() if (p / "manifest.json").exists()]


def test_zero_weight_channel_keeps_its_bias_in_int32(planted, tmp_path):
    """A dead weight channel (all zeros) with a large bias: the int32 bias must not saturate."""
    import onnxruntime as ort

    from trtopt.quantization.calibrate import calibrate
    from trtopt.quantization.qdq import quantize

    model_path, data = planted
    model = onnx.load(model_path)
    w_b = next(i for i in model.graph.initializer if i.name == "w_b")
    array = numpy_helper.to_array(w_b).copy()
    array[:, 0] = 0.0
    w_b.CopyFrom(numpy_helper.from_array(array, "w_b"))
    dead = tmp_path / "dead.onnx"
    onnx.save(model, dead)
    table = calibrate(dead, str(data), method="max")
    quantize(dead, table, tmp_path / "dead.int8.onnx", encoding="onnxruntime-cpu")
    int8 = onnx.load(tmp_path / "dead.int8.onnx")
    int8.graph.output.append(onnx.ValueInfoProto(name="h"))
    onnx.save(int8, tmp_path / "dead.int8.onnx")
    x = np.random.default_rng(2).normal(size=(8, FEATURES)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "dead.int8.onnx"), providers=["CPUExecutionProvider"])
    h = session.run(["h"], {"x": x})[0]
    assert np.allclose(h[:, 0], 1000.0, rtol=0.01)  # the bias alone: 1000, not a clipped int32


def test_layer_macs_from_weight_and_output_shapes():
    from trtopt.int8_eval import layer_macs

    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    matmul = helper.make_node("MatMul", ["q", "k"], ["s"], name="attention")
    gemm = helper.make_node("Gemm", ["a", "w2"], ["g"], name="fc", transA=1)
    add = helper.make_node("Add", ["y", "bias"], ["z"], name="add")
    weights = {"w": (8, 3, 3, 3), "w2": (6, 3), "bias": (8, 1, 1)}
    shapes = {"y": (2, 8, 10, 10), "q": (2, 4, 5, 16), "s": (2, 4, 5, 5), "a": (6, 2), "g": (2, 3), "z": (2, 8, 10, 10),
              **weights}
    assert layer_macs(conv, shapes) == 2 * 8 * 10 * 10 * 3 * 3 * 3  # every output: a 3x3x3 fan-in
    assert layer_macs(matmul, shapes) == 2 * 4 * 5 * 5 * 16  # inner dimension of two activations
    assert layer_macs(gemm, shapes) == 2 * 3 * 6  # transA: the inner dimension is A's first
    assert layer_macs(add, shapes) == 2 * 8 * 10 * 10  # elementwise: one per output value
    assert layer_macs(add, weights) == 0.0  # shape never seen: no claim
    lstm = helper.make_node("LSTM", ["seq", "W", "R", "B"], ["Y"], name="lstm", hidden_size=16)
    recurrent = {"seq": (5, 2, 8), "W": (1, 64, 8), "R": (1, 64, 16), "Y": (5, 1, 2, 16)}
    assert layer_macs(lstm, recurrent) == 5 * 2 * (64 * 8 + 64 * 16)  # both weights, every step and sequence


def test_blocks_rank_by_harm_per_speed_gained_and_float_runs_stay_contiguous():
    from trtopt.mixed_precision import Block, _islands, contiguous_runs, split_blocks

    order = [f"l{i}" for i in range(10)]
    assert split_blocks(order, 3) == [("l0", "l1", "l2"), ("l3", "l4", "l5", "l6"), ("l7", "l8", "l9")]
    assert split_blocks(order[:2], 12) == [("l0",), ("l1",)]  # never more blocks than layers
    blocks = [
        Block(0, ("a",), harm=0.4, gain=0.20),  # 2 units of noise per unit of speed gained
        Block(1, ("b",), harm=0.1, gain=0.0),  # INT8 gains nothing here: stays float first (ranked last)
        Block(2, ("c",), harm=0.5, gain=0.50),  # 1 per unit: quantized first
        Block(3, ("d",), harm=0.0, gain=0.0005),  # harmless: quantized first however small its gain
    ]
    assert [b.index for b in sorted(blocks, key=lambda b: b.priority)] == [3, 2, 0, 1]
    assert contiguous_runs({"l1", "l2", "l5", "l9"}, order) == [["l1", "l2"], ["l5"], ["l9"]]
    macs = {"a": 10.0, "b": 1.0, "c": 10.0, "d": 10.0, "e": 100.0, "f": 1.0, "g": 10.0}
    # b: little compute between float a and c; e: too much compute to pay two boundaries for; f: not enclosed
    assert _islands({"a", "c", "d", "g"}, list("abcdefg"), macs) == {"b"}
    assert _islands({"a", "c"}, list("abcdefg"), macs) == {"b"}


def test_trimming_returns_harmless_edge_layers_to_int8(planted):
    """Started from everything float, trimming the run's edges hands fc_a and fc_b back, keeps the planted fc_c."""
    from trtopt.accuracy import MetricSettings
    from trtopt.budget import AccuracyBudget
    from trtopt.backends.onnxruntime import OnnxRuntimeRunner
    from trtopt.int8_eval import Evaluator, load_heldout
    from trtopt.mixed_precision import _Search, _trim
    from trtopt.quantization.calibrate import calibrate
    from trtopt.settings import QdqSettings

    model, data = planted
    table = calibrate(model, str(data), method="max")
    quant = QdqSettings(encoding="onnxruntime-cpu")
    with OnnxRuntimeRunner(model, threads=1) as fp32:
        heldout = load_heldout(fp32, str(data), "heldout", 32, 16)
        with Evaluator(model, table, quant, heldout, MetricSettings(), threads=1) as evaluator:
            state = _Search(evaluator, AccuracyBudget.parse("agreement=0.95"))
            order = ["fc_a", "fc_b", "fc_c"]
            macs = {"fc_a": FEATURES * HIDDEN, "fc_b": HIDDEN * HIDDEN, "fc_c": HIDDEN * CLASSES}
            assert _trim(state, set(order), order, macs, limit=14) == {"fc_c"}
            # left edge: 1 and 2 layers back hold, all 3 miss; the right edge's one step is that same variant
            assert evaluator.evaluations == 3 and all(entry["phase"] == "trim" for entry in state.tried)


def test_latency_comparison_calls_a_difference_only_when_it_is_clear():
    """Real timed callables: 1 ms vs 4 ms of sleep is a clear difference in both directions; equal ones are not."""
    import time

    from trtopt.latency import FASTER, SLOWER, UNCLEAR, LatencySettings, compare_latency

    settings = LatencySettings(warmup=1, min_rounds=3, max_rounds=5, max_seconds=0.05)
    timed = compare_latency({"fast": lambda: time.sleep(0.001), "slow": lambda: time.sleep(0.004)}, settings)
    assert 3 <= timed.rounds <= 5 and timed.fastest_ms["fast"] <= timed.median_ms["fast"]
    assert timed.verdict("slow", "fast") == SLOWER and timed.verdict("fast", "slow") == FASTER
    assert timed.speedup("fast", "slow") > 2
    fields = timed.to_json("slow", "fast")
    assert fields["slower_than_fp32"] is True and fields["speed_vs_fp32"] == SLOWER and fields["timing_rounds"] >= 3
    same = compare_latency({"a": lambda: time.sleep(0.002), "b": lambda: time.sleep(0.002)}, settings)
    assert same.verdict("a", "b") == UNCLEAR and same.to_json("a", "b")["slower_than_fp32"] is False


def test_layers_kept_float_become_fp16_for_a_tensorrt_target(planted, tmp_path):
    """The pipeline's INT8 model for a TensorRT plan: kept layers in FP16, Q/DQ scales untouched FP32 constants."""
    import dataclasses

    import onnxruntime as ort

    from trtopt.backends.registry import get_backend
    from trtopt.pipeline import _precision_model
    from trtopt.plan import plan_build
    from trtopt.quantization.calibrate import calibrate
    from trtopt.settings import BuildSettings

    model, data = planted
    settings = BuildSettings().with_overrides(precision="int8", calib_data=str(data), engines_dir=tmp_path,
                                              backend="onnxruntime", encoding="tensorrt", threads=1)
    plan = plan_build(model, settings)
    table = calibrate(model, str(data), method="max")
    for backend, precision in (("tensorrt", "fp16"), ("onnxruntime", "fp32")):
        target = dataclasses.replace(plan, backend=get_backend(backend))
        staging = tmp_path / backend
        staging.mkdir()
        name, info = _precision_model(target, model, staging, table, ["fc_c"])
        assert info["float_layers"]["precision"] == precision
        graph = onnx.load(staging / name).graph
        types = {init.name: init.data_type for init in graph.initializer}
        fc_c = next(n for n in graph.node if n.name == "fc_c")
        assert types[fc_c.input[1]] == (TensorProto.FLOAT16 if precision == "fp16" else TensorProto.FLOAT)
        for node in graph.node:  # every Q/DQ scale is an FP32 initializer, never a Cast output
            if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                assert types.get(node.input[1]) == TensorProto.FLOAT
        session = ort.InferenceSession(str(staging / name), providers=["CPUExecutionProvider"])
        x = np.random.default_rng(3).normal(size=(8, FEATURES)).astype(np.float32)
        logits = session.run(None, {"x": x})[0]
        assert logits.dtype == np.float32  # FP32 outputs whatever the inside
        if precision == "fp32":
            reference = logits
    assert np.abs(logits - reference).max() < 1e-2 * np.abs(reference).max()  # the FP16 model computed the same


def make_embedding_model(path: Path) -> Path:
    """ids (int64) -> Gather from a table -> Gemm: random data for it needs --input-range."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(10, FEATURES)).astype(np.float32), "table"),
             numpy_helper.from_array(rng.normal(size=(FEATURES, CLASSES)).astype(np.float32), "w")]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
             helper.make_node("Gemm", ["e", "w"], ["logits"], name="fc")]
    graph = helper.make_graph(nodes, "embedding", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def test_sensitivity_takes_the_build_data_flags(tmp_path):
    model = make_embedding_model(tmp_path / "embedding.onnx")
    common = ("sensitivity", str(model), "--calib-data", "random", "--samples", "16", "--threads", "1")
    missing = run_cli(*common)
    assert missing.returncode == 2 and "--input-range" in missing.stderr.strip().splitlines()[-1]
    ranged = run_cli(*common, "--input-range", "ids:0:9", "--calib-samples", "32", "--json", str(tmp_path / "s.json"))
    assert ranged.returncode == 0, ranged.stderr
    assert [entry["node"] for entry in json.loads((tmp_path / "s.json").read_text())["layers"]] == ["fc"]
