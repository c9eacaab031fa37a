"""Bundled digits and user .npz training data."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from trtopt.data import load_dataset
from trtopt.data.digits import DIGITS_MEAN, DIGITS_STD, load_digits_split
from trtopt.data.npz_dataset import load_npz_dataset
from trtopt.errors import UsageError


def test_splits_shapes_and_disjointness():
    splits = {name: load_digits_split(name) for name in ("train", "val", "test")}
    assert sum(x.shape[0] for x, _ in splits.values()) == 1797
    assert splits["train"][0].shape[0] == 1258
    for x, y in splits.values():
        assert x.dtype == np.float32 and x.shape[1:] == (1, 16, 16)
        assert y.dtype == np.int64 and set(np.unique(y)) == set(range(10))
    rows = {name: {x[i].tobytes() for i in range(x.shape[0])} for name, (x, _) in splits.items()}
    # a handful of digits are exact duplicates in the source data; the splits still must not share samples
    assert len(rows["train"] & rows["test"]) < 5 and len(rows["val"] & rows["test"]) < 5


def test_same_images_as_scikit_learn():
    from sklearn.datasets import load_digits

    from trtopt.data.digits import normalize

    bunch = load_digits()
    x, y = load_digits_split("test")
    # every test sample is one of scikit-learn's digits with its label, transformed by normalize()
    reference = {
        normalize(bunch.images[i : i + 1].astype(np.float32) / 16.0).tobytes(): int(bunch.target[i])
        for i in range(len(bunch.target))
    }
    assert all(reference[x[i : i + 1].tobytes()] == y[i] for i in range(x.shape[0]))
    counts = np.bincount(y, minlength=10)
    assert counts.min() >= 25 and counts.max() <= 30  # stratified: ~15% of each class


def test_deterministic_and_normalized():
    x1, y1 = load_digits_split("train")
    x2, y2 = load_digits_split("train")
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    x1[0] = 99.0  # callers get copies
    assert not np.array_equal(load_digits_split("train")[0][0], x1[0])
    assert abs(float(x2.mean())) < 1e-3 and abs(float(x2.std()) - 1.0) < 1e-3
    # upsampling is pixel repetition of the 8x8 source: 2x2 blocks are constant
    assert np.array_equal(x2[:, :, ::2, ::2], x2[:, :, 1::2, 1::2])
    assert x2.min() == pytest.approx((0 - DIGITS_MEAN) / DIGITS_STD, abs=1e-5)


def test_unknown_split():
    with pytest.raises(UsageError, match="'holdout'"):
        load_digits_split("holdout")


def test_digits_import_is_torch_free():
    code = "import sys; from trtopt.data.digits import load_digits_split as f; f('val'); print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_npz_dataset_holdout_and_explicit_splits(tmp_path):
    x, y = load_digits_split("val")
    path = tmp_path / "d.npz"
    np.savez(path, x=x[:, 0], y=y)  # N x H x W is accepted and gets a channel axis
    data = load_npz_dataset(path)
    assert data.sample_shape == (1, 16, 16) and data.num_classes == 10
    assert data.splits["train"][0].shape[0] + data.splits["val"][0].shape[0] == x.shape[0]
    explicit = tmp_path / "e.npz"
    np.savez(explicit, x=x, y=y, x_val=x[:7], y_val=y[:7], x_test=x[:5], y_test=y[:5])
    data = load_dataset(str(explicit))
    assert data.splits["train"][0].shape[0] == x.shape[0] and data.splits["test"][0].shape[0] == 5


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((4, 1, 8, 8), np.float32)}, "no array 'y'"),
    ({"images": np.zeros((4, 1, 8, 8)), "labels": np.zeros(4, np.int64)}, "no array 'x' or 'y'"),
    ({"x": np.zeros((4, 1, 8, 8)), "y": np.zeros(3, np.int64)}, "4 samples but 'y' has 3"),
    ({"x": np.zeros((4, 8)), "y": np.zeros(4, np.int64)}, "N x C x H x W"),
    ({"x": np.zeros((4, 1, 8, 8)), "y": np.zeros(4, np.float32)}, "integer label"),
])
def test_npz_errors_name_file_and_array(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(UsageError, match=message) as info:
        load_npz_dataset(path)
    assert "bad.npz" in str(info.value)


def test_npz_not_a_zip_and_missing(tmp_path):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file at all")
    with pytest.raises(UsageError, match="corrupt.npz"):
        load_npz_dataset(corrupt)
    with pytest.raises(UsageError, match="not found"):
        load_dataset(str(tmp_path / "missing.npz"))
    with pytest.raises(UsageError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")
