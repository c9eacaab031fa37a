"""The one pool of samples every target sees, and the check that targets can share it.

Inputs come from a data source (``--data``, as in calibration; labels give task accuracy) or are
generated from ``--seed``. Feeds for each batch size are cut once, before timing, so a timed query
never pays for slicing or casting. A query library is bound to one target's input dtypes: float
data is cast within its kind (an FP16-I/O engine gets float16 copies of the same samples).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from trtopt.tensors import TensorInfo
from trtopt.errors import UsageError
from trtopt.shapes import is_dynamic, parse_shapes

_FEED_VARIANTS = 8  # distinct prepared feeds per batch size: enough to defeat trivial caching


def _kind(dtype: np.dtype) -> str:
    return {"f": "float", "i": "int", "u": "int", "b": "bool"}.get(np.dtype(dtype).kind, np.dtype(dtype).kind)


def check_compatible(reference: Sequence[TensorInfo], candidate: Sequence[TensorInfo], reference_name: str,
                     candidate_name: str) -> None:
    """Raise UsageError unless `candidate` takes the same inputs as `reference` (batch axis aside)."""
    ref = {i.name: i for i in reference}
    cand = {i.name: i for i in candidate}
    if set(ref) != set(cand):
        raise UsageError(
            f"target {candidate_name!r} has inputs {[i.describe() for i in candidate]}, but baseline "
            f"{reference_name!r} has {[i.describe() for i in reference]}; all targets must take the same inputs"
        )
    for name, want in ref.items():
        got = cand[name]
        problem = None
        if _kind(got.dtype) != _kind(want.dtype):
            problem = f"dtype {np.dtype(got.dtype).name} vs {np.dtype(want.dtype).name}"
        elif len(got.shape) != len(want.shape):
            problem = f"rank {len(got.shape)} vs {len(want.shape)}"
        else:
            for axis, (a, b) in enumerate(zip(got.shape[1:], want.shape[1:]), start=1):
                if not is_dynamic(a) and not is_dynamic(b) and a != b:
                    problem = f"dimension {axis} is {a} vs {b}"
                    break
        if problem:
            raise UsageError(
                f"target {candidate_name!r} input {got.describe()} does not match baseline "
                f"{reference_name!r} input {want.describe()} ({problem}); all targets must take the same inputs"
            )


def allowed_batch_sizes(inputs: Sequence[TensorInfo], wanted: Sequence[int]) -> list[int]:
    """The batch sizes of `wanted` that every input's batch axis (fixed size or profile bounds) accepts."""
    allowed = []
    for size in wanted:
        ok = True
        for info in inputs:
            if not info.shape:
                continue
            dim = info.shape[0]
            bound = info.bounds[0] if info.bounds else None
            if (not is_dynamic(dim) and dim != size) or (bound is not None and not bound[0] <= size <= bound[1]):
                ok = False
        if ok:
            allowed.append(size)
    return allowed


def sample_shapes(inputs: Sequence[TensorInfo], shapes: str | None) -> dict[str, tuple[int, ...]]:
    """Per-sample shape (batch axis dropped) of every input; dynamic dims must come from --shapes."""
    given = parse_shapes(shapes) if shapes else {}
    unknown = sorted(set(given) - {i.name for i in inputs})
    if unknown:
        raise UsageError(f"--shapes names {unknown}, but the inputs are {[i.describe() for i in inputs]}")
    result = {}
    for info in inputs:
        dims = []
        for axis, dim in enumerate(info.shape[1:], start=1):
            if not is_dynamic(dim):
                dims.append(int(dim))
            elif info.name in given and len(given[info.name]) == len(info.shape):
                dims.append(given[info.name][axis])
            else:
                raise UsageError(f"input {info.describe()} has dynamic dimension {axis}; give its size with "
                                 f"--shapes {info.name}:1x... (rank {len(info.shape)})")
        result[info.name] = tuple(dims)
    return result


@dataclass
class SamplePool:
    """All samples, stacked per input, plus optional integer labels."""

    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None
    origin: str  # "generated (seed 0)" or the data source spec

    @property
    def size(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])

    def bind(self, inputs: Sequence[TensorInfo]) -> "QueryLibrary":
        dtypes = {info.name: np.dtype(info.dtype) for info in inputs}
        return QueryLibrary(
            {name: array.astype(dtypes[name], copy=False) for name, array in self.arrays.items()}, self.labels
        )


@dataclass
class QueryLibrary:
    """Prepared feeds for one target (see scenarios.QueryLibrary)."""

    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None
    _cache: dict[int, list[dict[str, np.ndarray]]] = field(default_factory=dict, repr=False)

    @property
    def size(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])

    def _rows(self, batch_size: int, index: int) -> np.ndarray:
        return np.arange(index * batch_size, (index + 1) * batch_size) % self.size

    def query(self, batch_size: int, index: int) -> dict[str, np.ndarray]:
        feeds = self._cache.get(batch_size)
        if feeds is None:
            variants = min(_FEED_VARIANTS, max(1, math.ceil(self.size / batch_size)))
            feeds = [{n: np.ascontiguousarray(a[self._rows(batch_size, i)]) for n, a in self.arrays.items()}
                     for i in range(variants)]
            self._cache[batch_size] = feeds
        return feeds[index % len(feeds)]

    def chunks(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """The whole pool in order, in full batches of `batch_size` (a ragged tail is dropped)."""
        for start in range(0, self.size - batch_size + 1, batch_size):
            yield {n: a[start:start + batch_size] for n, a in self.arrays.items()}


def generated_pool(inputs: Sequence[TensorInfo], samples: int, seed: int, shapes: str | None = None) -> SamplePool:
    """Seeded synthetic samples: standard normal floats, small non-negative ints, random booleans."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in sample_shapes(inputs, shapes).items():
        info = next(i for i in inputs if i.name == name)
        kind = _kind(info.dtype)
        full = (samples, *shape)
        if kind == "float":
            arrays[name] = rng.standard_normal(full, dtype=np.float32)
        elif kind == "int":
            arrays[name] = rng.integers(0, 10, size=full).astype(info.dtype)
        else:
            arrays[name] = rng.random(full) < 0.5
    return SamplePool(arrays, None, f"generated (seed {seed})")


def data_pool(spec: str, inputs: Sequence[TensorInfo], samples: int, part: str) -> SamplePool:
    """Up to `samples` samples (and labels when the source has them) from a data source."""
    from trtopt.data.sources import open_source

    parts: dict[str, list[np.ndarray]] = {i.name: [] for i in inputs}
    labels: list[np.ndarray] = []
    labelled = True
    for batch in open_source(spec, inputs, batch_size=min(64, samples), max_samples=samples, part=part):
        for name in parts:
            parts[name].append(batch.feed[name])
        labelled = labelled and batch.labels is not None
        if batch.labels is not None:
            labels.append(np.asarray(batch.labels))
    if not parts or not next(iter(parts.values())):
        raise UsageError(f"--data {spec}: no samples in part {part!r}")
    arrays = {name: np.concatenate(chunks)[:samples] for name, chunks in parts.items()}
    label_array = np.concatenate(labels)[:samples] if labelled and labels else None
    return SamplePool(arrays, label_array, spec)
