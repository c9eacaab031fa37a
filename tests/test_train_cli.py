"""`trtopt train` bad input: one clear line, exit 2, no process started, nothing written."""
from __future__ import annotations


import numpy as np
import pytest

from conftest import run_cli


def _train(*args, cwd):
    return run_cli("train", *args, cwd=cwd, timeout=120)


def _assert_usage_error(proc, message):
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("trtopt train: error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr


def test_unknown_model(tmp_path):
    proc = _train("--model", "vgg16", "--out", tmp_path / "out", "--nproc", "2", cwd=tmp_path)
    _assert_usage_error(proc, "unknown model 'vgg16'; expected one of: lenet, mobilenetv2, resnet18, resnet50")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((8, 1, 16, 16), np.float32)}, "has no array 'y'"),
    ({"inputs": np.zeros((8, 1, 16, 16), np.float32), "y": np.zeros(8, np.int64)}, "has no array 'x'"),
])
def test_npz_without_x_or_y(tmp_path, arrays, message):
    np.savez(tmp_path / "data.npz", **arrays)
    proc = _train("--dataset", tmp_path / "data.npz", "--out", tmp_path / "out", cwd=tmp_path)
    _assert_usage_error(proc, message)
    assert "data.npz" in proc.stderr and not (tmp_path / "out").exists()


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder")
    proc = _train("--out", blocker / "run", "--epochs", "1", cwd=tmp_path)
    _assert_usage_error(proc, f"cannot create output folder {blocker / 'run'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_bad_flag_values(tmp_path):
    _assert_usage_error(_train("--epochs", "0", "--out", tmp_path / "o", cwd=tmp_path), "--epochs must be >= 1")
    _assert_usage_error(_train("--model-config", "width", "--out", tmp_path / "o", cwd=tmp_path),
                        "--model-config expects key=value")
    _assert_usage_error(_train("--resume", "--out", tmp_path / "fresh", cwd=tmp_path),
                        f"--resume: checkpoint not found: {tmp_path / 'fresh' / 'last.pt'}")
