"""Settings objects and the build plan: defaults in one place, every check before work, one `force`."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import make_residual_convnet, run_cli
from trtopt.backends.registry import get_backend
from trtopt.errors import UsageError
from trtopt.plan import cache_key, plan_build
from trtopt.quantization.calibrate import calibrate
from trtopt.settings import BuildSettings, EngineSettings, keywords


def test_settings_are_frozen_and_flat_keywords_reach_their_part() -> None:
    settings = BuildSettings().with_overrides(calib_data="digits", calib_method="max", val_data="v.npz", threads=2,
                                              exclude_nodes=["b", "a"], max_shapes="input:4x3x16x16", force=True)
    assert settings.calibration.data == "digits" and settings.calibration.method == "max"
    assert settings.accuracy.data == "v.npz" and settings.engine.threads == 2 and settings.force
    assert settings.qdq.exclude_nodes == ("b", "a") and settings.shapes.max_shapes == "input:4x3x16x16"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.engine.threads = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="calib_dta"):
        BuildSettings().with_overrides(calib_dta="digits")
    assert {"calib_data", "calib_table", "val_data", "accuracy_budget", "threads", "contexts", "shapes"} <= set(
        keywords()
    )


def test_settings_import_nothing_heavy() -> None:
    code = "import sys, trtopt.settings; assert not {'onnx', 'onnxruntime', 'torch'} & set(sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).returncode == 0


def test_plan_finds_user_errors_before_any_work(residual_convnet: Path, tmp_path: Path) -> None:
    engines = tmp_path / "engines"
    bad = {
        "precision": ({"precision": "int4"}, "precision 'int4' is unknown"),
        "int8 without data": ({"precision": "int8"}, "--int8 needs calibration"),
        "method": (
            {"precision": "int8", "calib_data": "random", "calib_method": "kl"},
            "--calib-method must be one of",
        ),
        "contexts": ({"contexts": 0}, "--contexts must be a positive integer"),
        "budget": ({"accuracy_budget": "cosine"}, "--accuracy-budget 'cosine'"),
        "name": ({"name": "../x"}, "--name '../x'"),
        "backend": ({"backend": "tensort"}, "--backend 'tensort' is unknown"),
    }
    for case, (overrides, message) in bad.items():
        with pytest.raises(UsageError, match=message):
            plan_build(residual_convnet, BuildSettings(engines_dir=str(engines)).with_overrides(**overrides))
        assert not any(engines.glob("*")), case


def test_cache_key_takes_only_the_engine_fields_the_backend_declares(residual_convnet: Path, tmp_path: Path) -> None:
    plans = {
        threads: plan_build(residual_convnet, BuildSettings(engines_dir=str(tmp_path)).with_overrides(threads=threads))
        for threads in (1, 2)
    }
    assert cache_key(plans[1]) != cache_key(plans[2]), "ONNX Runtime records its threads in the engine folder"
    tensorrt = get_backend("tensorrt")  # its declaration only: nothing here touches TensorRT
    assert "threads" not in tensorrt.engine_fields and "contexts" in tensorrt.engine_fields
    as_tensorrt = {t: dataclasses.replace(p, backend=tensorrt) for t, p in plans.items()}
    assert cache_key(as_tensorrt[1]) == cache_key(as_tensorrt[2]), "threads must not rebuild a TensorRT engine"
    more_contexts = dataclasses.replace(as_tensorrt[1], options=dataclasses.replace(
        as_tensorrt[1].options, engine=EngineSettings(threads=1, contexts=2)))
    assert cache_key(more_contexts) != cache_key(as_tensorrt[1])


def test_force_accepts_a_table_from_other_model_bytes_everywhere(residual_convnet: Path, tmp_path: Path) -> None:
    other = make_residual_convnet(tmp_path / "other.onnx", seed=3)
    table = tmp_path / "other_table.json"
    calibrate(other, "random", method="max", samples=16).save(table)
    commands = {
        "quantize --fp16": ["quantize", str(residual_convnet), "-o", str(tmp_path / "f16.onnx"), "--fp16",
                            "--calib-table", str(table)],
        "quantize": ["quantize", str(residual_convnet), "-o", str(tmp_path / "i8.onnx"), "--calib-table", str(table)],
        "build": ["build", str(residual_convnet), "--int8", "--calib-table", str(table), "--backend", "onnxruntime",
                  "--engines-dir", str(tmp_path / "engines"), "--accuracy-samples", "8", "--threads", "1"],
    }
    for verb, args in commands.items():
        refused = run_cli(*args)
        assert refused.returncode == 2 and "the scale table was computed on a model with sha256" in refused.stderr, verb
        forced = run_cli(*args, "--force")
        assert forced.returncode == 0, (verb, forced.stderr)
    manifest = (tmp_path / "engines" / "residual_convnet-int8" / "manifest.json").read_text()
    assert '"command": "trtopt build' in manifest, "the CLI passes its command line into the manifest"
    x = np.zeros((1, 3, 16, 16), np.float32)
    from trtopt.repository import load

    with load(tmp_path / "engines" / "residual_convnet-int8") as runner:
        assert runner.infer({"input": x})["logits"].shape == (1, 10)
