"""scikit-learn's handwritten digits as the bundled dataset (numpy only; the data ships with sklearn).

The 8x8 images (pixel values 0..16) are scaled to [0, 1], upsampled to 16x16 by pixel repetition so
the classic 1x16x16 CNN fits them, and normalized with constants measured once on the train split.
The split is stratified and seeded, so every stage (training, calibration, accuracy checks) sees the
same samples on every machine.
"""
from __future__ import annotations

import functools

import numpy as np

from trtopt.errors import UsageError

DIGITS_MEAN = 0.3055545  # mean of the upsampled [0, 1] train images
DIGITS_STD = 0.3761245  # their standard deviation
NUM_CLASSES = 10
SHAPE = (1, 16, 16)
SPLITS = ("train", "val", "test")
_SEED = 0
_HOLDOUT = 0.3  # 70% train; the rest is halved into val and test


@functools.lru_cache(maxsize=1)
def _split_indices() -> dict[str, np.ndarray]:
    from sklearn.model_selection import train_test_split

    labels = _raw()[1]
    train, rest = train_test_split(np.arange(labels.shape[0]), test_size=_HOLDOUT, random_state=_SEED, stratify=labels)
    val, test = train_test_split(rest, test_size=0.5, random_state=_SEED, stratify=labels[rest])
    return {"train": train, "val": val, "test": test}


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32) / 16.0, bunch.target.astype(np.int64)


def normalize(images01: np.ndarray) -> np.ndarray:
    """[N, 8, 8] images in [0, 1] -> normalized float32 [N, 1, 16, 16]."""
    upsampled = images01.repeat(2, axis=1).repeat(2, axis=2)[:, None, :, :]
    return ((upsampled - DIGITS_MEAN) / DIGITS_STD).astype(np.float32)


def load_digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 [N,1,16,16] normalized, y int64 [N]) for split in train/val/test; fresh copies."""
    if split not in SPLITS:
        raise UsageError(f"unknown digits split {split!r}; expected one of: {', '.join(SPLITS)}")
    images, labels = _raw()
    index = _split_indices()[split]
    return normalize(images[index]), labels[index].copy()
