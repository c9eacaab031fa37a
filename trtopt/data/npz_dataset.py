"""User training data as an .npz file with `x` (images, N x C x H x W) and `y` (integer labels).

Optional `x_val`/`y_val` and `x_test`/`y_test` arrays give explicit held-out splits; without them a
seeded 15% of the samples is held out for validation and the same samples serve as the test split
(the user asked to train, not to benchmark on a separate set). Images are used as stored: the file's
optional `mean`/`std` arrays only document the normalization already applied.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trtopt.errors import UsageError

_HOLDOUT = 0.15
_SEED = 0


@dataclass(frozen=True)
class NpzDataset:
    path: Path
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return int(max(int(y.max()) for _, y in self.splits.values() if y.size)) + 1

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.splits["train"][0].shape[1:])


def _pair(path: Path, arrays: np.lib.npyio.NpzFile, xkey: str, ykey: str) -> tuple[np.ndarray, np.ndarray]:
    try:  # members load lazily: an object (pickled) array fails here and is never unpickled
        x, y = arrays[xkey], arrays[ykey]
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read '{xkey}'/'{ykey}': {exc}") from exc
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.number):
        raise UsageError(
            f"{path}: '{xkey}' must be numeric images shaped N x C x H x W (or N x H x W), got {x.dtype} {x.shape}"
        )
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise UsageError(f"{path}: '{ykey}' must be a 1-D integer label array, got {y.dtype} {y.shape}")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise UsageError(f"{path}: '{xkey}' has {x.shape[0]} samples but '{ykey}' has {y.shape[0]} (need equal, > 0)")
    if y.min() < 0:
        raise UsageError(f"{path}: '{ykey}' has negative labels; expected class indices 0..K-1")
    nonfinite = int(x.size - np.count_nonzero(np.isfinite(x)))
    if nonfinite:  # NaN/Inf images train to NaN weights that still "finish"
        raise UsageError(f"{path}: '{xkey}' has {nonfinite} NaN/Inf values of {x.size}; clean the data before training")
    return np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64)


def load_npz_dataset(path: str | Path) -> NpzDataset:
    """Read and validate the file; UsageError names the file and the missing/malformed array."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"dataset file not found: {file}")
    try:
        arrays = np.load(file, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{file} is not a readable .npz file: {exc}") from exc
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise UsageError(f"{file} holds a single array; expected an .npz with arrays 'x' and 'y'")
    with arrays:
        missing = [key for key in ("x", "y") if key not in arrays.files]
        if missing:
            raise UsageError(f"{file} has no array {' or '.join(repr(m) for m in missing)}; "
                             f"expected 'x' (images) and 'y' (labels), found: {', '.join(arrays.files) or 'nothing'}")
        train = _pair(file, arrays, "x", "y")
        splits = {"train": train}
        if "x_val" in arrays.files and "y_val" in arrays.files:
            splits["val"] = _pair(file, arrays, "x_val", "y_val")
        else:
            order = np.random.default_rng(_SEED).permutation(train[1].shape[0])
            cut = max(1, int(round(_HOLDOUT * order.size)))
            if cut >= order.size:
                raise UsageError(f"{file}: {order.size} samples are too few to hold out a validation split")
            splits["train"] = (train[0][order[cut:]], train[1][order[cut:]])
            splits["val"] = (train[0][order[:cut]], train[1][order[:cut]])
        if "x_test" in arrays.files and "y_test" in arrays.files:
            splits["test"] = _pair(file, arrays, "x_test", "y_test")
        else:
            splits["test"] = splits["val"]
        channels = splits["train"][0].shape[1]
        mean = tuple(float(v) for v in np.ravel(arrays["mean"])) if "mean" in arrays.files else (0.0,) * channels
        std = tuple(float(v) for v in np.ravel(arrays["std"])) if "std" in arrays.files else (1.0,) * channels
    shapes = {name: x.shape[1:] for name, (x, _) in splits.items()}
    if len(set(shapes.values())) != 1:
        raise UsageError(f"{file}: splits have different sample shapes {shapes}")
    return NpzDataset(file, splits, mean, std)
