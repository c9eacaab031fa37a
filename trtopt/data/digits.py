"""scikit-learn's handwritten digits as the bundled dataset (numpy only; the data ships with sklearn).

The 8x8 images (pixel values 0..16) are scaled to [0, 1], upsampled to 16x16 by pixel repetition so
the classic 1x16x16 CNN fits them, and normalized with constants measured once on the train split.
The split is stratified and seeded, so every stage (training, calibration, accuracy checks) sees the
same samples on every machine.

The images are read straight from the data file scikit-learn installs (the file `load_digits` reads):
importing scikit-learn itself costs seconds of CPU in every training process, and the stratified
split is a few lines of numpy.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from trtopt.errors import TrtoptError, UsageError

DIGITS_MEAN = 0.3057075  # mean of the upsampled [0, 1] train images
DIGITS_STD = 0.3762686  # their standard deviation
NUM_CLASSES = 10
SHAPE = (1, 16, 16)
SPLITS = ("train", "val", "test")
_SEED = 0
_HOLDOUT = 0.3  # 70% train; the rest is halved into val and test


@functools.lru_cache(maxsize=1)
def _split_indices() -> dict[str, np.ndarray]:
    """Per class: a seeded permutation, the first 70% train, the rest halved into val and test."""
    labels = _raw()[1]
    rng = np.random.default_rng(_SEED)
    parts: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    for label in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == label))
        held = int(round(_HOLDOUT * members.size))
        parts["train"].append(members[held:])
        parts["val"].append(members[: held // 2])
        parts["test"].append(members[held // 2: held])
    return {split: np.sort(np.concatenate(chunks)) for split, chunks in parts.items()}


def _data_file() -> Path:
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise TrtoptError("scikit-learn is not installed; it provides the bundled digits (pip install scikit-learn)")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise TrtoptError(f"scikit-learn's digits data file is missing: {path}; reinstall scikit-learn")
    return path


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 8, 8] in [0, 1], labels [N]): 64 pixel columns (0..16) and a label column."""
    table = np.loadtxt(_data_file(), delimiter=",", dtype=np.float32)
    return table[:, :-1].reshape(-1, 8, 8) / 16.0, table[:, -1].astype(np.int64)


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
