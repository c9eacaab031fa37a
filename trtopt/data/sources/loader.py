"""A user's Python loader, ``path/to/file.py:function`` (Polygraphy's data-loader convention).

The function takes no arguments and returns an iterable of feed dicts (input name -> array, a batch
or a single sample); a ``labels`` entry that is not an input name carries labels. It is called again
for every pass over the data, so it must yield the same samples each time.
"""
from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trtopt.tensors import TensorInfo
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
    except Exception as exc:  # the user's code: report it as their file's failure
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

    def _what(self) -> str:
        return f"loader {self.path}:{self.function_name}"

    def _chunks(self) -> Iterator[Chunk]:
        origin = f"{self.path}:{self.function_name}"
        try:
            items = iter(self.function())
        except TypeError as exc:
            raise UsageError(f"{origin} must return an iterable of feed dicts: {exc}") from exc
        for number, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise UsageError(f"{origin} yielded {type(item).__name__} (item {number}); expected a dict "
                                 f"of input name -> array")
            label_key = take_labels(item, self.inputs)
            feed = {k: np.asarray(v) for k, v in item.items() if k != label_key}
            labels = np.asarray(item[label_key]) if label_key else None
            yield Chunk(feed, labels, f"{origin} item {number}")
