"""Calibration/evaluation data sources against real ONNX models' inputs."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from trtopt.tensors import TensorInfo
from trtopt.backends.onnxruntime import OnnxRuntimeRunner
from trtopt.data.sources import open_source
from trtopt.errors import UsageError


@pytest.fixture
def inputs(residual_convnet: Path) -> list[TensorInfo]:
    return OnnxRuntimeRunner(residual_convnet).inputs


def _samples(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16)).astype(np.float32)


def test_npz_batches_labels_and_max_samples(tmp_path: Path, inputs: list[TensorInfo]) -> None:
    x = _samples(23)
    np.savez(tmp_path / "calib.npz", input=x.astype(np.float64), labels=np.arange(23))
    source = open_source(str(tmp_path / "calib.npz"), inputs, batch_size=5, max_samples=12)
    batches = list(source)
    assert source.num_samples == 12
    assert [b.size for b in batches] == [5, 5, 2]
    assert all(b.feed["input"].dtype == np.float32 for b in batches)
    np.testing.assert_array_equal(np.concatenate([b.feed["input"] for b in batches]), x[:12])
    np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), np.arange(12))
    assert "calib.npz" in source.describe()


def test_parts_follow_every_fifth_rule_for_any_batch_size(tmp_path: Path, inputs: list[TensorInfo]) -> None:
    np.savez(tmp_path / "d.npz", arr_0=_samples(17), y=np.arange(17))
    seen = {}
    for batch_size in (1, 4, 16):
        for part in ("calibration", "heldout"):
            source = open_source(str(tmp_path / "d.npz"), inputs, batch_size=batch_size, part=part)
            labels = np.concatenate([b.labels for b in source])
            assert source.num_samples == labels.size
            seen.setdefault(part, labels)
            np.testing.assert_array_equal(seen[part], labels)
    np.testing.assert_array_equal(seen["heldout"], [4, 9, 14])
    assert sorted(np.concatenate([seen["heldout"], seen["calibration"]]).tolist()) == list(range(17))


def test_folder_of_per_input_npy_and_per_chunk_npz(tmp_path: Path, inputs: list[TensorInfo]) -> None:
    x = _samples(10)
    per_input = tmp_path / "per_input"
    per_input.mkdir()
    np.save(per_input / "input.npy", x)
    np.save(per_input / "labels.npy", np.arange(10))
    got = list(open_source(str(per_input), inputs, batch_size=4))
    np.testing.assert_array_equal(np.concatenate([b.feed["input"] for b in got]), x)
    chunks = tmp_path / "chunks"
    chunks.mkdir()
    for i in range(0, 10, 3):
        np.savez(chunks / f"part{i:02d}.npz", input=x[i:i + 3])
    got = list(open_source(str(chunks), inputs, batch_size=4))
    assert [b.size for b in got] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b.feed["input"] for b in got]), x)


def test_bad_arrays_name_the_input_and_expectation(tmp_path: Path, inputs: list[TensorInfo]) -> None:
    np.savez(tmp_path / "wrong_name.npz", image=_samples(2), other=_samples(2))
    with pytest.raises(UsageError, match=r"no array for input\(s\) \['input'\].*keys \['image', 'other'\]"):
        open_source(str(tmp_path / "wrong_name.npz"), inputs)
    np.savez(tmp_path / "wrong_shape.npz", input=np.zeros((2, 3, 8, 16), np.float32))
    with pytest.raises(UsageError, match=r"wrong_shape.npz: input 'input': dimension 2 is 8, expected 16"):
        list(open_source(str(tmp_path / "wrong_shape.npz"), inputs))
    np.savez(tmp_path / "ints.npz", input=np.zeros((2, 3, 16, 16), np.int64))
    with pytest.raises(UsageError, match=r"input 'input' has dtype int64, expected float32"):
        list(open_source(str(tmp_path / "ints.npz"), inputs))
    with pytest.raises(UsageError, match="calibration data not found: nowhere"):
        open_source("nowhere", inputs)


def test_image_folder_resize_layout_normalize_and_class_labels(tmp_path: Path, inputs: list[TensorInfo]) -> None:
    from PIL import Image

    for cls, value in (("cat", 255), ("dog", 0)):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (40, 30), (value, value, value)).save(tmp_path / cls / f"{i}.png")
    source = open_source(str(tmp_path), inputs, batch_size=4, mean=0.5, std=0.25)
    batches = list(source)
    x = np.concatenate([b.feed["input"] for b in batches])
    assert x.shape == (6, 3, 16, 16)
    np.testing.assert_allclose(x[:3], 2.0)   # (1 - 0.5) / 0.25
    np.testing.assert_allclose(x[3:], -2.0)
    np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), [0, 0, 0, 1, 1, 1])
    nhwc = [TensorInfo("img", np.dtype(np.float32), ("n", 16, 16, 3))]
    assert next(iter(open_source(str(tmp_path), nhwc))).feed["img"].shape == (6, 16, 16, 3)
    with pytest.raises(UsageError, match="std has 2 values; the model's input has 3"):
        open_source(str(tmp_path), inputs, std=[1, 2])


def test_python_loader_varying_spatial_size_is_batched_per_shape(tmp_path: Path) -> None:
    script = tmp_path / "load.py"
    script.write_text(
        "import numpy as np\n"
        "def feeds():\n"
        "    for size in (8, 8, 12):\n"
        "        yield {'x': np.full((3, 2, size, size), size, np.float32)}\n")
    dynamic = [TensorInfo("x", np.dtype(np.float32), ("n", 2, "h", "w"))]
    batches = list(open_source(f"{script}:feeds", dynamic, batch_size=4))
    assert [(b.size, b.feed["x"].shape[2]) for b in batches] == [(4, 8), (2, 8), (3, 12)]
    with pytest.raises(UsageError, match="has no function 'missing'"):
        open_source(f"{script}:missing", dynamic)


def test_random_is_opt_in_warns_and_is_batch_size_independent(
    inputs: list[TensorInfo], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="trtopt.data"):
        a = np.concatenate(
            [b.feed["input"] for b in open_source("random", inputs, batch_size=3, max_samples=7, seed=5)]
        )
    assert "meaningless for accuracy" in caplog.text
    b = np.concatenate([b.feed["input"] for b in open_source("random", inputs, batch_size=7, max_samples=7, seed=5)])
    np.testing.assert_array_equal(a, b)
    dynamic = [TensorInfo("x", np.dtype(np.float32), ("n", 3, "h", "w"))]
    with pytest.raises(UsageError, match=r"input 'x' dimension 2 is dynamic.*--shapes x:"):
        list(open_source("random", dynamic, max_samples=2))
    shaped = open_source("random", dynamic, max_samples=2, shapes={"x": (1, 3, 5, 7)})
    assert next(iter(shaped)).feed["x"].shape == (2, 3, 5, 7)


def test_digits_parts_are_its_val_and_test_splits() -> None:
    from trtopt.data.digits import load_digits_split

    info = [TensorInfo("input", np.dtype(np.float32), ("batch", 1, 16, 16))]
    source = open_source("digits", info, part="calibration", batch_size=64)
    x_val, y_val = load_digits_split("val")
    assert source.num_samples == len(y_val)
    got = list(source)
    np.testing.assert_array_equal(np.concatenate([b.labels for b in got]), y_val)
    np.testing.assert_array_equal(np.concatenate([b.feed["input"] for b in got]), x_val)
    assert open_source("digits", info, part="heldout").num_samples == len(load_digits_split("test")[1])
    with pytest.raises(UsageError, match="provides one tensor but the model has 2 inputs"):
        open_source("digits", info * 2)


def test_fixed_batch_model_drops_short_tail(tmp_path: Path) -> None:
    fixed = [TensorInfo("input", np.dtype(np.float32), (4, 3, 16, 16))]
    np.savez(tmp_path / "d.npz", input=_samples(10))
    source = open_source(str(tmp_path / "d.npz"), fixed, batch_size=16)
    assert [b.size for b in source] == [4, 4]
    assert source.num_samples == 8
