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
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from trtopt.tensors import TensorInfo
from trtopt.data.sources.base import Chunk, DataSource, take_labels
from trtopt.errors import UsageError
from trtopt.usercode import load_function, split_spec

DEFAULT_FUNCTION = "load_data"


class LoaderSource(DataSource):
    kind = "loader"

    def __init__(self, spec: str, inputs: Sequence[TensorInfo], **kwargs: object) -> None:
        super().__init__(inputs, **kwargs)  # type: ignore[arg-type]
        self.path, self.function_name = split_spec(spec, DEFAULT_FUNCTION)
        self.function = load_function(self.path, self.function_name, "data loader")
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
        """A source read again (DataSource is re-iterable) must give the same items; changed data would mix samples."""
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
