"""Calibration end to end on real ONNX models built here: edge cases, determinism, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import make_residual_convnet, run_cli
from trtopt.errors import UsageError
from trtopt.quantization.calibrate import DEGENERATE_AMAX, calibrate
from trtopt.quantization.histogram import NonFiniteError
from trtopt.quantization.table import ScaleTable
from trtopt.quantization.targets import calibration_targets


def make_edge_model(path: Path) -> Path:
    """x[N,2,H,W] -> all-zero, constant, negative-only, sliced (empty when H <= 4), sqrt, reciprocal."""
    scalar = lambda name, value: numpy_helper.from_array(np.array(value, np.float32), name)  # noqa: E731
    inits = [scalar("zero", 0.0), scalar("three", 3.0), scalar("minus_one", -1.0),
             numpy_helper.from_array(np.array([4], np.int64), "start"),
             numpy_helper.from_array(np.array([1 << 30], np.int64), "end"),
             numpy_helper.from_array(np.array([2], np.int64), "axis")]
    nodes = [
        helper.make_node("Mul", ["x", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "three"], ["constant"]),
        helper.make_node("Relu", ["x"], ["relu"]),
        helper.make_node("Sub", ["minus_one", "relu"], ["negative"]),
        helper.make_node("Slice", ["x", "start", "end", "axis"], ["sliced"]),
        helper.make_node("Add", ["sliced", "sliced"], ["sliced2"]),
        helper.make_node("Sqrt", ["x"], ["root"]),
        helper.make_node("Reciprocal", ["x"], ["recip"]),
    ]
    outputs = ["constant", "negative", "sliced2", "root", "recip"]
    graph = helper.make_graph(
        nodes, "edges", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, "h", "w"])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def _loader(tmp_path: Path, body: str) -> str:
    script = tmp_path / "feeds.py"
    script.write_text("import numpy as np\n\ndef feeds():\n" + body)
    return f"{script}:feeds"


def test_edge_tensors_varying_sizes_and_empty_slices(tmp_path: Path) -> None:
    model = make_edge_model(tmp_path / "edge.onnx")
    # spatial size changes between batches; at 3x3 the slice from row 4 on has zero elements
    data = _loader(
        tmp_path,
        "    rng = np.random.default_rng(0)\n"
        "    for size in (6, 3, 6, 3):\n"
        "        yield {'x': (np.abs(rng.standard_normal((4, 2, size, size))) + 0.5).astype(np.float32)}\n",
    )
    # entropy keeps a constant tensor's full range exactly; auto's MSE objective may clip it by one bin (0.05%)
    table = calibrate(model, data, all_tensors=True, batch_size=4, method="entropy")
    assert table.num_samples == 16
    zeros, constant, negative = table.tensors["zeros"], table.tensors["constant"], table.tensors["negative"]
    assert zeros.amax == DEGENERATE_AMAX and zeros.absmax == 0 and zeros.zero_fraction == 1.0
    assert constant.amax == pytest.approx(3.0) and constant.min == constant.max == 3.0  # full range kept
    x = table.tensors["x"]
    assert negative.max <= -1.5 and negative.min == pytest.approx(-1 - x.max)
    assert 0 < negative.amax <= -negative.min + 1e-6
    sliced = table.tensors["sliced2"]
    assert sliced.count == 2 * (4 * 2 * 2 * 6)  # only the two 6x6 batches contribute (rows 4-5)
    for name, stats in table.tensors.items():
        assert np.isfinite(stats.amax) and stats.amax > 0, name
    assert "x" in calibration_targets(onnx.load(model))


def test_nan_and_inf_name_tensor_and_batch_or_are_skipped(tmp_path: Path) -> None:
    model = make_edge_model(tmp_path / "edge.onnx")
    data = _loader(tmp_path, "    for batch in range(3):\n"
                              "        x = np.full((2, 2, 6, 6), 4.0, np.float32)\n"
                              "        if batch == 2:\n"
                              "            x[0, 0, 0, 0] = -1.0\n"
                              "            x[1, 0, 0, 0] = 0.0\n"
                              "        yield {'x': x}\n")
    with pytest.raises(NonFiniteError, match=r"tensor 'root' in batch 2: 1 NaN and 0 Inf"):
        calibrate(model, data, batch_size=2, all_tensors=True)
    table = calibrate(model, data, batch_size=2, all_tensors=True, nan_policy="skip", method="entropy")
    root, recip = table.tensors["root"], table.tensors["recip"]
    assert root.nonfinite == 1 and root.amax == pytest.approx(2.0)
    assert recip.nonfinite == 1 and recip.max == pytest.approx(0.25)
    assert table.tensors["x"].nonfinite is None


def test_float16_model_calibrates_like_float32(tmp_path: Path) -> None:
    x = np.random.default_rng(2).standard_normal((24, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "d.npz", input=x)
    fp32 = calibrate(make_residual_convnet(tmp_path / "m32.onnx"), str(tmp_path / "d.npz"), method="max")
    fp16 = calibrate(make_residual_convnet(tmp_path / "m16.onnx", dtype=TensorProto.FLOAT16), str(tmp_path / "d.npz"))
    assert set(fp16.tensors) == set(fp32.tensors)
    for name, stats in fp16.tensors.items():
        assert np.isfinite(stats.amax) and 0 < stats.amax <= fp32.tensors[name].amax * 1.01, name


@pytest.mark.parametrize("method", ["entropy", "percentile", "mse"])
def test_same_amax_for_any_order_and_batch_size(tmp_path: Path, residual_convnet: Path, method: str) -> None:
    x = np.random.default_rng(4).standard_normal((40, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "a.npz", input=x)
    np.savez(tmp_path / "b.npz", input=x[np.random.default_rng(5).permutation(40)])
    base = calibrate(residual_convnet, str(tmp_path / "a.npz"), method=method, batch_size=16)
    for spec, batch_size in ((tmp_path / "b.npz", 16), (tmp_path / "a.npz", 1), (tmp_path / "b.npz", 7)):
        other = calibrate(residual_convnet, str(spec), method=method, batch_size=batch_size)
        for name, stats in base.tensors.items():
            bin_width = stats.absmax / 2048
            assert abs(other.tensors[name].amax - stats.amax) <= bin_width * 1.0001, (name, batch_size)


def test_targets_cover_placement_inputs_and_skip_weights(residual_convnet: Path) -> None:
    targets = calibration_targets(onnx.load(residual_convnet))
    for name in ("input", "r0", "r1", "c2", "r2", "mp", "flat"):
        assert name in targets
    assert not any(name.endswith((".w", ".b")) for name in targets)


def test_table_refused_for_other_model_bytes(tmp_path: Path, residual_convnet: Path) -> None:
    table = calibrate(residual_convnet, "random", method="max", max_samples=4)
    saved = ScaleTable.load(table.save(tmp_path / "t.json"))
    assert saved.table_id == table.table_id and saved.tensors == table.tensors
    saved.ensure_matches(residual_convnet)
    other = make_residual_convnet(tmp_path / "other.onnx", seed=1)
    with pytest.raises(UsageError, match=f"sha256 {table.model_sha256}.*other.onnx has sha256"):
        saved.ensure_matches(other)
    saved.ensure_matches(other, force=True)


def test_cli_calibrate_writes_table_and_cache_and_imports_it(tmp_path: Path, residual_convnet: Path) -> None:
    np.savez(tmp_path / "d.npz", input=np.random.default_rng(0).standard_normal((20, 3, 16, 16)).astype(np.float32))
    done = run_cli(
        "calibrate",
        str(residual_convnet),
        "--calib-data",
        str(tmp_path / "d.npz"),
        "--calib-part",
        "all",
        "--method",
        "percentile",
        "--percentile",
        "99.9",
        "--batch-size",
        "8",
        "-o",
        "t.json",
        "--trt-cache",
        "t.cache",
        "--trt-version",
        "8.6.1",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "on 20 samples (method percentile)" in done.stdout
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["params"]["percentile"] == 99.9 and data["num_samples"] == 20
    assert (tmp_path / "t.cache").read_text().startswith("TRT-8601-EntropyCalibration2\n")
    # by default the CLI leaves the held-out part (every fifth sample) for accuracy checks, as build does
    default = run_cli(
        "calibrate", str(residual_convnet), "--calib-data", str(tmp_path / "d.npz"), "-o", "d.json", cwd=tmp_path
    )
    assert default.returncode == 0, default.stderr
    assert json.loads((tmp_path / "d.json").read_text())["num_samples"] == 16
    back = run_cli("calibrate", str(residual_convnet), "--import-trt-cache", "t.cache", "-o", "back.json", cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    imported = ScaleTable.load(tmp_path / "back.json")
    for name, stats in ScaleTable.load(tmp_path / "t.json").tensors.items():
        assert np.float32(imported.amax(name) / 127) == np.float32(stats.amax / 127)
    bad = run_cli("calibrate", str(residual_convnet), "--calib-data", "missing.npz", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "calibration data not found: missing.npz" in bad.stderr


def test_cli_shapes_use_the_trtexec_parser(tmp_path: Path, residual_convnet: Path) -> None:
    ok = run_cli("calibrate", str(residual_convnet), "--calib-data", "random", "--shapes", "input:2x3x16x16",
              "--max-samples", "4", "-o", "r.json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    bad = run_cli("calibrate", str(residual_convnet), "--calib-data", "random", "--shapes", "input:2xAx16",
               "-o", "bad.json", cwd=tmp_path)
    assert bad.returncode == 2 and "--shapes input:" in bad.stderr and not (tmp_path / "bad.json").exists()
