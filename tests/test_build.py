"""The build pipeline and `trtopt build`: precisions, manifest, reuse, accuracy budget, kills, bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from trtopt.pipeline import BuildResult, build, format_comparison
from trtopt.errors import UsageError
from trtopt.quantization.calibrate import calibrate
from trtopt.repository import load

from conftest import CLI_ENV, make_residual_convnet, run_cli



def _no_engine_left(engines: Path, name: str) -> None:
    """Neither the engine nor a staging folder that looks like one (staging has no manifest by design)."""
    with pytest.raises(UsageError):
        load(engines / name)
    if engines.exists():
        assert not [p for p in engines.iterdir() if p.name.startswith(f".{name}.") and (p / "manifest.json").exists()]


def test_lenet_int8_fp16_fp32_builds_reuse_and_table(trained_lenet, tmp_path, monkeypatch):
    engines = tmp_path / "engines"
    int8 = build(trained_lenet.onnx, precision="int8", calib_data="digits", engines_dir=engines, threads=1)
    m = int8.manifest
    assert m["schema_version"] == 2 and m["backend"]["name"] == "onnxruntime" and m["device"]["kind"] == "cpu"
    assert m["calibration"]["method"] == "auto" and len(m["calibration"]["table_id"]) == 64
    assert (int8.engine_dir / m["engine"]["file"]).is_file() and (int8.engine_dir / "scales.json").is_file()
    assert m["io"]["inputs"][0]["name"] == "input" and "profile" in m["io"]
    acc = m["accuracy"]
    assert acc["data"] == "digits (heldout)" and acc["samples"] > 100
    # INT8 test accuracy within 0.5 points of FP32
    assert acc["accuracy_drop_points"] <= 0.5, acc
    assert acc["top1_agreement"] > 0.97 and acc["cosine_similarity"] > 0.99

    def no_calibration(*args, **kwargs):
        raise AssertionError("a cache hit must not recalibrate")

    monkeypatch.setattr("trtopt.quantization.calibrate.calibrate", no_calibration)
    again = build(trained_lenet.onnx, precision="int8", calib_data="digits", engines_dir=engines, threads=1)
    assert again.cache_hit and again.manifest["cache_key"] == m["cache_key"]
    monkeypatch.undo()
    forced = build(
        trained_lenet.onnx, precision="int8", calib_data="digits", engines_dir=engines, threads=1, force=True
    )
    assert not forced.cache_hit and forced.manifest["created"] >= m["created"]

    fp16 = build(trained_lenet.onnx, precision="fp16", calib_data="digits", engines_dir=engines, threads=1)
    assert fp16.manifest["accuracy"]["top1_agreement"] >= 0.995
    fp32 = build(trained_lenet.onnx, engines_dir=engines, threads=1, calib_data="digits")
    assert fp32.manifest["accuracy"]["max_abs_error"] < 1e-4
    table = format_comparison([fp32, fp16, forced])
    lines = table.splitlines()
    assert len(lines) == 5 and "lenet-int8" in lines[4] and "lenet-fp16" in lines[3]
    assert f"{fp32.engine_bytes / 1e6:.2f}" in lines[2]


def test_int8_without_calibration_is_a_usage_error(residual_convnet, tmp_path):
    proc = run_cli("build", str(residual_convnet), "--int8", "--engines-dir", str(tmp_path / "engines"))
    assert proc.returncode == 2
    assert "--calib-data" in proc.stderr and "--calib-table" in proc.stderr
    assert not (tmp_path / "engines" / "residual_convnet-int8").exists()


def test_cli_build_cache_hit_and_budget_failure(residual_convnet, tmp_path):
    engines = tmp_path / "engines"
    first = run_cli("build", str(residual_convnet), "--int8", "--calib-data", "random", "--engines-dir", str(engines),
                 "--name", "net", "--calib-samples", "64", "--accuracy-samples", "32", "--threads", "1")
    assert first.returncode == 0, first.stderr
    assert "falling back to ONNX Runtime" in first.stdout and "top-1 agreement" in first.stdout
    second = run_cli("build", str(residual_convnet), "--int8", "--calib-data", "random", "--engines-dir", str(engines),
                  "--name", "net", "--calib-samples", "64", "--accuracy-samples", "32", "--threads", "1", "--json")
    assert second.returncode == 0 and json.loads(second.stdout)["cache_hit"] is True
    over = run_cli("build", str(residual_convnet), "--fp16", "--engines-dir", str(engines), "--name", "strict",
                "--accuracy-samples", "32", "--accuracy-budget", "max-abs-error=0,agreement=0.5")
    assert over.returncode == 1 and "accuracy budget" in over.stderr and "max-abs-error" in over.stderr
    _no_engine_left(engines, "strict")
    assert not [p for p in engines.iterdir() if p.name.startswith(".strict")], "staging folder removed"
    percent = run_cli("build", str(residual_convnet), "--engines-dir", str(engines), "--name", "percent",
                   "--accuracy-budget", "agreement=99")
    assert percent.returncode == 2 and "agreement='99' can never be met" in percent.stderr, percent.stderr
    _no_engine_left(engines, "percent")
    labels_needed = run_cli("build", str(residual_convnet), "--engines-dir", str(engines), "--name", "x",
                         "--accuracy-samples", "16", "--accuracy-budget", "top1-drop=0.5")
    assert labels_needed.returncode == 1 and "labels" in labels_needed.stderr


SLOW_LOADER = """
import os, time
import numpy as np

def load_data():
    rng = np.random.default_rng(0)
    yield {"input": rng.standard_normal((4, 3, 16, 16)).astype(np.float32)}
    open(os.environ["TRTOPT_TEST_MARKER"], "w").close()
    time.sleep(60)
    yield {"input": rng.standard_normal((4, 3, 16, 16)).astype(np.float32)}
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_killed_build_leaves_no_loadable_engine(residual_convnet, tmp_path, sig):
    """The accuracy check reads --val-data inside the staging folder: kill the build right there."""
    loader = tmp_path / "slow.py"
    loader.write_text(SLOW_LOADER)
    marker = tmp_path / "marker"
    engines = tmp_path / "engines"
    proc = subprocess.Popen([sys.executable, "-m", "trtopt", "build", str(residual_convnet), "--fp16", "--engines-dir",
                             str(engines), "--name", "killed", "--val-data", f"{loader}:load_data"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **CLI_ENV, "TRTOPT_TEST_MARKER": str(marker)})
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the build never reached the accuracy check"
        time.sleep(0.05)
    assert any(p.name.startswith(".killed.") for p in engines.iterdir()), "killed mid-build: staging exists"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130), stderr
    _no_engine_left(engines, "killed")
    if sig != signal.SIGKILL:  # a scheduler's SIGTERM is handled like Ctrl-C
        assert "interrupted" in stderr and ("SIGTERM" in stderr) == (sig == signal.SIGTERM)
        assert not [p for p in engines.iterdir() if p.name.startswith(".killed.")], "the staging folder is cleaned"


def _int_input_model(path: Path) -> Path:
    graph = helper.make_graph([helper.make_node("Identity", ["ids"], ["out"])], "ints",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 4])],
                              [helper.make_tensor_value_info("out", TensorProto.INT64, ["n", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def test_bad_inputs_are_clear_usage_errors(residual_convnet, tmp_path):
    engines = str(tmp_path / "engines")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 50)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(residual_convnet.read_bytes()[: residual_convnet.stat().st_size // 2])
    np.savez(
        tmp_path / "wrong_name.npz",
        pixels=np.zeros((8, 3, 16, 16), np.float32),
        depth=np.zeros((8, 3, 16, 16), np.float32),
    )
    np.savez(tmp_path / "wrong_shape.npz", input=np.zeros((8, 5, 16, 16), np.float32))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    other = make_residual_convnet(tmp_path / "other.onnx", seed=3)
    table = tmp_path / "other_table.json"
    calibrate(other, "random", method="max", max_samples=16).save(table)
    cases = {
        "corrupt": (["build", str(corrupt)], "corrupt.onnx"),
        "truncated": (["build", str(truncated)], "truncated.onnx"),
        "no float computation": (["build", str(_int_input_model(tmp_path / "ints.onnx"))],
                                 "no floating-point computation"),
        "calib names": (
            ["build", str(residual_convnet), "--int8", "--calib-data", str(tmp_path / "wrong_name.npz")],
            "no array for input",
        ),
        "calib shapes": (
            ["build", str(residual_convnet), "--int8", "--calib-data", str(tmp_path / "wrong_shape.npz")],
            "5",
        ),
        "engines dir": (["build", str(residual_convnet), "--engines-dir", str(blocker / "engines")], "engines"),
        "foreign table": (["build", str(residual_convnet), "--int8", "--calib-table", str(table)], "sha256"),
    }
    for case, (args, needle) in cases.items():
        extra = [] if "--engines-dir" in args else ["--engines-dir", engines]
        proc = run_cli(*args, *extra)
        assert proc.returncode == 2, (case, proc.stderr)
        message = proc.stderr.strip().splitlines()[-1]  # earlier lines: INFO logs of the stages that ran
        assert message.startswith("trtopt build: error:") and needle in message, (case, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_comparison_table_and_stale_staging_sweep(residual_convnet, tmp_path):
    stale, fresh = tmp_path / ".residual_convnet-fp32.abc.staging", tmp_path / ".residual_convnet-fp32.def.staging"
    stale.mkdir()
    fresh.mkdir()
    old = time.time() - 7 * 3600
    os.utime(stale, (old, old))
    result = build(residual_convnet, engines_dir=tmp_path, accuracy_samples=8, threads=1)
    assert not stale.exists() and fresh.exists(), "only staging folders no build can still own are swept"
    assert isinstance(result, BuildResult) and result.latency_ms is not None
    row = format_comparison([result], latency_ms={result.name: 1.5}).splitlines()[2]
    assert "1.50 (" in row and "n/a" in row and "inf" in row  # no labels: task accuracy n/a; identical: SNR inf


def test_public_build_is_the_pipeline_function(residual_convnet):
    import trtopt
    import trtopt.pipeline  # importing the module must not shadow the lazily exported function

    with pytest.raises(UsageError, match="precision 'int4'"):
        trtopt.build(residual_convnet, precision="int4")
