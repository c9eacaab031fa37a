"""Datasets for training and evaluation: the bundled digits or a user .npz, behind one function.

Torch-free: arrays are numpy; the trainer wraps them in tensors itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trtopt.errors import UsageError


@dataclass(frozen=True)
class Dataset:
    """Train/val/test arrays plus what a model needs to know about them."""

    name: str  # "digits" or the resolved .npz path
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    num_classes: int
    sample_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def load_dataset(name: str) -> Dataset:
    """`"digits"` or a path to an .npz file with `x` and `y` (see trtopt.data.npz_dataset)."""
    if name == "digits":
        from trtopt.data import digits

        splits = {split: digits.load_digits_split(split) for split in digits.SPLITS}
        return Dataset("digits", splits, digits.NUM_CLASSES, digits.SHAPE, (digits.DIGITS_MEAN,), (digits.DIGITS_STD,))
    if name.endswith(".npz") or Path(name).is_file():
        from trtopt.data.npz_dataset import load_npz_dataset

        data = load_npz_dataset(name)
        return Dataset(str(data.path.resolve()), data.splits, data.num_classes, data.sample_shape, data.mean, data.std)
    raise UsageError(f"unknown dataset {name!r}; expected 'digits' or a path to an .npz file with arrays x and y")
