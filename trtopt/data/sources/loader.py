"""A user's Python loader, ``path/to/file.py:function`` (Polygraphy's data-loader convention).

The function takes no arguments and returns an iterable of feed dicts (input name -> array, a batch
or a single sample); a ``labels`` entry that is not an input name carries labels. It is called again
for every pass over the data, so it must yield the same samples each time: each item's digest
(blake2b over names, dtypes, shapes and bytes; about 1 GB/s) is compared with the first pass's.

Security: the file is imported and run with the user's rights, like ``python file.py``. Only name
loaders you trust; a benchmark suite file must be opted in (``bench --suite ... --allow-code``).
Whatever the loader raises (even ``sys.exit``) is reported as a usage error naming the file.
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trtopt.backends.base import TensorInfo
from trtopt.data.sources.base import Chunk, DataSource, take_labels
from trtopt.errors import UsageError

DEFAULT_FUNCTION = "load_data"


def _load_function(path: Path, name: str) -> Callable[[], Iterable[Mapping[str, Any]]]:
    if not path.is_file():
        raise UsageError(f"data loader script not found: {path}")
    module_name = f"_trtopt_loader_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import data loader script {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # the user's code: report it as their file's failure
        del sys.modules[module_name]
        raise UsageError(f"data loader script {path} failed to import: {type(exc).__name__}: {exc}") from exc
    function = getattr(module, name, None)
    if not callable(function):
        raise UsageError(f"data loader script {path} has no function {name!r}")
    return function


class LoaderSource(DataSource):
    kind = "loader"

    def __init__(self, spec: str, inputs: Sequence[TensorInfo], **kwargs: object) -> None:
        super().__init__(inputs, **kwargs)  # type: ignore[arg-type]
        path, separator, name = spec.partition(".py:")
        self.path = Path(path + ".py") if separator else Path(spec)
        self.function_name = name or DEFAULT_FUNCTION
        self.function = _load_function(self.path, self.function_name)
        self._first_pass: list[bytes] = []  # item digests of the first pass
        self._passes = 0

    def _what(self) -> str:
        return f"loader {self.path}:{self.function_name}"

    def _chunks(self) -> Iterator[Chunk]:
        origin = f"{self.path}:{self.function_name}"
        self._passes += 1
        try:
            items = iter(self.function())
            for number, item in enumerate(items):
                chunk = self._chunk(item, number, origin)
                self._check_repeat(chunk, number, origin)
                yield chunk
        except UsageError:
            raise
        except TypeError as exc:
            raise UsageError(f"{origin} must return an iterable of feed dicts: {exc}") from exc
        except (Exception, SystemExit) as exc:  # the user's code failed: their file, not trtopt
            raise UsageError(f"data loader {origin} failed: {type(exc).__name__}: {exc}") from exc

    def _chunk(self, item: Any, number: int, origin: str) -> Chunk:
        if not isinstance(item, Mapping):
            raise UsageError(f"{origin} yielded {type(item).__name__} (item {number}); expected a dict "
                             f"of input name -> array")
        label_key = take_labels(item, self.inputs)
        feed = {k: np.asarray(v) for k, v in item.items() if k != label_key}
        labels = np.asarray(item[label_key]) if label_key else None
        return Chunk(feed, labels, f"{origin} item {number}")

    def _check_repeat(self, chunk: Chunk, number: int, origin: str) -> None:
        """Calibration reads the data twice; a loader that changes between passes corrupts the histograms."""
        digest = _digest(chunk)
        if self._passes == 1:
            self._first_pass.append(digest)
        elif number < len(self._first_pass) and digest != self._first_pass[number]:
            raise UsageError(f"{origin} yielded different data on pass {self._passes} (item {number} differs from "
                             "the first pass); it must yield the same samples every time it is called (seed any "
                             "randomness, do not shuffle)")


def _digest(chunk: Chunk) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    arrays = sorted(chunk.feed.items()) + ([("", chunk.labels)] if chunk.labels is not None else [])
    for name, array in arrays:
        contiguous = np.ascontiguousarray(array)
        digest.update(f"{name}|{contiguous.dtype.str}|{contiguous.shape}|".encode())
        if contiguous.dtype.kind != "O":
            digest.update(memoryview(contiguous).cast("B"))
    return digest.digest()
