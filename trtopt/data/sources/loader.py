"""A user's Python loader, ``path/to/file.py:function`` (Polygraphy's data-loader convention).

The function takes no arguments and returns an iterable of feed dicts (input name -> array, a batch
or a single sample); a ``labels`` entry that is not an input name carries labels. It is called again
for every pass over the data, so it must yield the same samples each time.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

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
