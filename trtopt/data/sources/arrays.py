"""Saved arrays: one ``.npz``/``.npy`` file, or a folder of them.

Matching rules, tried in order:

* ``.npz``: keys equal to input names; a ``labels`` or ``y`` key holds labels. A model with one
  input also accepts a file with exactly one other key (``np.savez(path, x)`` gives ``arr_0``).
* a folder whose ``.npy`` stems are the input names (``input.npy``, optionally ``labels.npy``):
  each file holds every sample, and is memory-mapped so only the current batch is read;
* any other folder: every ``.npy``/``.npz`` file (sorted by name) is one chunk of samples for
  the inputs (a lone ``.npy`` only for single-input models). Files are read one at a time.

Arrays hold samples along axis 0; an array with one axis less than the input is one sample.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from trtopt.tensors import TensorInfo
from trtopt.data.sources.base import Chunk, DataSource, single_input, take_labels
from trtopt.errors import UsageError


def _load(path: Path) -> Mapping[str, np.ndarray] | np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if path.suffix == ".npy" else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read calibration data {path}: {exc}") from exc


def _read(arrays: Mapping[str, np.ndarray], key: str, origin: str) -> np.ndarray:
    """One array of an .npz; members load lazily, so a pickled (object) member fails here, never unpickled."""
    try:
        return np.asarray(arrays[key])
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read array {key!r} of {origin}: {exc}") from exc


def _match(arrays: Mapping[str, np.ndarray], inputs: Sequence[TensorInfo], origin: str,
           constants: Mapping[str, TensorInfo] | None = None) -> Chunk:
    """Map file keys to input names (see the module docstring for the rules); keys naming the model's
    initializer-backed inputs (``constants``) come along for DataSource.constant_feeds()."""
    constants = constants or {}
    label_key = take_labels(arrays, inputs)
    data_keys = [key for key in arrays if key != label_key and key not in constants]
    names = [info.name for info in inputs]
    if len(inputs) == 1 and names[0] not in arrays and len(data_keys) == 1:
        feed = {names[0]: _read(arrays, data_keys[0], origin)}
    else:
        missing = [name for name in names if name not in arrays]
        if missing:
            raise UsageError(f"{origin}: no array for input(s) {missing}; it has keys {sorted(arrays)}, "
                             f"the model expects {[i.describe() for i in inputs]}")
        feed = {name: _read(arrays, name, origin) for name in names}
    feed.update({name: _read(arrays, name, origin) for name in constants if name in arrays})
    labels = _read(arrays, label_key, origin) if label_key else None
    return Chunk(feed, labels, origin)


class NpzFileSource(DataSource):
    """One ``.npz`` or ``.npy`` file holding all samples."""

    kind = "arrays"

    def __init__(self, path: Path, inputs: Sequence[TensorInfo], **kwargs: object) -> None:
        super().__init__(inputs, **kwargs)  # type: ignore[arg-type]
        self.path = path
        if path.suffix == ".npy":
            single_input(self.inputs, f".npy file {path}")
        loaded = _load(path)
        if isinstance(loaded, np.ndarray):
            self._count = _count(loaded, self.inputs, str(path))
        else:
            with loaded:
                self._count = _count(_match(loaded, self.inputs, str(path), self.constants).feed, self.inputs,
                                     str(path))

    def _what(self) -> str:
        return f"arrays from {self.path}"

    def _total(self) -> int:
        return self._count

    def _chunks(self) -> Iterator[Chunk]:
        loaded = _load(self.path)
        if isinstance(loaded, np.ndarray):
            yield Chunk({self.inputs[0].name: loaded}, None, str(self.path))
            return
        with loaded:
            yield _match(loaded, self.inputs, str(self.path), self.constants)


class ArrayFolderSource(DataSource):
    """A folder of ``.npy``/``.npz`` files (either one file per input, or one file per chunk)."""

    kind = "arrays"

    def __init__(self, folder: Path, inputs: Sequence[TensorInfo], **kwargs: object) -> None:
        super().__init__(inputs, **kwargs)  # type: ignore[arg-type]
        self.folder = folder
        self.files = sorted(p for p in folder.iterdir() if p.suffix in (".npy", ".npz") and p.is_file())
        if not self.files:
            raise UsageError(f"calibration data folder {folder} has no .npy or .npz files")
        stems = {p.stem: p for p in self.files if p.suffix == ".npy"}
        self.per_input = all(info.name in stems for info in self.inputs)
        if self.per_input:
            self.columns = {info.name: stems[info.name] for info in self.inputs}
            label = take_labels(stems, self.inputs)
            self.label_file = stems[label] if label else None
        elif any(p.suffix == ".npy" for p in self.files):
            single_input(self.inputs, f"a folder of per-chunk .npy files ({folder})")

    def _what(self) -> str:
        layout = "one .npy per input" if self.per_input else f"{len(self.files)} files"
        return f"arrays from folder {self.folder} ({layout})"

    def _total(self) -> int | None:
        if not self.per_input:
            return None
        columns = {n: _load(p) for n, p in self.columns.items()}
        return _count(columns, self.inputs, str(self.columns[self.inputs[0].name]))  # type: ignore[arg-type]

    def _chunks(self) -> Iterator[Chunk]:
        if self.per_input:
            # memory-mapped and read one batch-sized slice at a time
            columns = {name: _load(path) for name, path in self.columns.items()}
            labels = np.asarray(_load(self.label_file)) if self.label_file else None
            total = _count(columns, self.inputs, str(self.columns[self.inputs[0].name]))  # type: ignore[arg-type]
            if total == 1 and next(iter(columns.values())).ndim == len(self.inputs[0].shape) - 1:
                yield Chunk({n: np.asarray(a) for n, a in columns.items()}, labels, str(self.folder))  # type: ignore[arg-type]
                return
            for start in range(0, total, self.batch_size):
                stop = start + self.batch_size
                yield Chunk({n: np.asarray(a[start:stop]) for n, a in columns.items()},  # type: ignore[index]
                            labels[start:stop] if labels is not None else None, str(self.folder))
            return
        for path in self.files:
            loaded = _load(path)
            if isinstance(loaded, np.ndarray):
                yield Chunk({self.inputs[0].name: np.asarray(loaded)}, None, str(path))
            else:
                with loaded:
                    yield _match(loaded, self.inputs, str(path), self.constants)


def _count(feed: Mapping[str, np.ndarray] | np.ndarray, inputs: Sequence[TensorInfo], origin: str) -> int:
    """Samples in a file: axis 0, or 1 when the arrays are single samples (one axis short)."""
    array = feed if isinstance(feed, np.ndarray) else feed[inputs[0].name]
    if array.ndim == 0:  # np.save of a plain number
        raise UsageError(f"{origin}: the array for input {inputs[0].name!r} is a single number; expected samples "
                         f"shaped like {inputs[0].describe()}")
    return 1 if array.ndim == len(inputs[0].shape) - 1 else int(array.shape[0])


def open_arrays(path: Path, inputs: Sequence[TensorInfo], **kwargs: object) -> DataSource:
    if path.is_dir():
        return ArrayFolderSource(path, inputs, **kwargs)
    if path.suffix not in (".npz", ".npy"):
        raise UsageError(f"calibration data file {os.fspath(path)} is not .npz or .npy")
    return NpzFileSource(path, inputs, **kwargs)
