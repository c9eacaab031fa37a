"""Random data, only when the user names it: scales calibrated on it say nothing about accuracy.

Every sample is drawn from its own generator seeded by ``(seed, sample index)``, so the data is the
same for every batch size and every pass. Float inputs get standard normal values (or uniform values
in a given range), booleans fair coin flips, integer inputs uniform integers in the inclusive range
``ranges`` gives them (``--input-range ids:0:30522``): token ids, class indices or a sample rate have
no default a tool could guess, so an integer input without a range is refused. Dynamic dims other
than the batch take their size from ``shapes`` ({input: full shape}, trtexec's ``--shapes``) or,
when the input has profile bounds, a seeded draw within them per batch; otherwise the error asks
for ``--shapes``.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from trtopt.tensors import TensorInfo
from trtopt.data.sources.base import Chunk, DataSource
from trtopt.errors import UsageError

log = logging.getLogger("trtopt.data")

DEFAULT_SAMPLES = 64


ValueRange = tuple[float, float]


def parse_input_ranges(text: str | None, flag: str = "--input-range") -> dict[str, ValueRange]:
    """``ids:0:30522,mask:0:1`` -> {"ids": (0, 30522), "mask": (0, 1)} (inclusive; names may hold ':')."""
    ranges: dict[str, ValueRange] = {}
    for entry in (text or "").split(","):
        if not entry.strip():
            continue
        name, low, high = ([None, None, None] + entry.strip().rsplit(":", 2))[-3:]
        try:
            bounds = (float(low), float(high))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            bounds = None
        if not name or bounds is None or bounds[0] > bounds[1]:
            raise UsageError(f"{flag} {entry.strip()!r}: expected NAME:LOW:HIGH with LOW <= HIGH, e.g. ids:0:30522")
        ranges[name] = bounds
    return ranges


class RandomSource(DataSource):
    kind = "random"

    def __init__(self, inputs: Sequence[TensorInfo], *, seed: int = 0,
                 shapes: Mapping[str, Sequence[int]] | None = None, ranges: Mapping[str, ValueRange] | None = None,
                 **kwargs: object) -> None:
        super().__init__(inputs, **kwargs)  # type: ignore[arg-type]
        self.seed = seed
        self.ranges = dict(ranges or {})
        unknown_ranges = sorted(set(self.ranges) - {info.name for info in self.inputs})
        if unknown_ranges:
            raise UsageError(f"--input-range names unknown input(s) {unknown_ranges}; "
                             f"the model has {[i.describe() for i in self.inputs]}")
        for info in self.inputs:
            if np.dtype(info.dtype).kind in "iu" and info.name not in self.ranges:
                raise UsageError(f"random data for integer input {info.describe()} needs its value range: pass "
                                 f"--input-range {info.name}:LOW:HIGH (e.g. token ids 0:VOCAB-1), or give real data")
        self.shapes = {name: tuple(int(d) for d in shape) for name, shape in (shapes or {}).items()}
        unknown = sorted(set(self.shapes) - {info.name for info in self.inputs})
        if unknown:
            raise UsageError(
                f"--shapes names unknown input(s) {unknown}; the model has {[i.name for i in self.inputs]}"
            )
        self.count = self.max_samples or DEFAULT_SAMPLES
        log.warning(
            "using random data: INT8 scales calibrated on it are meaningless for accuracy, and accuracy "
            "measured on it shows output agreement only (use real samples, e.g. --calib-data / --val-data / --data)"
        )

    def _what(self) -> str:
        return f"random data (seed {self.seed})"

    def _applies_split(self) -> bool:
        return False  # both parts are fresh draws; heldout uses its own seed stream

    def _total(self) -> int:
        return self.count

    def _sample_shape(self, info: TensorInfo, chunk: int) -> tuple[int, ...]:
        """One sample's shape; the whole shape for inputs fed whole (base.whole_inputs)."""
        first = 0 if info.name in self.whole else 1
        if info.name in self.shapes:
            return self.shapes[info.name][first:]
        dims = []
        rng = np.random.default_rng([self.seed, 1 << 20, chunk])
        for axis, dim in enumerate(info.shape[first:], start=first):
            if isinstance(dim, int) and dim >= 0:
                dims.append(dim)
                continue
            bound = info.bounds[axis] if info.bounds else None
            if bound is None:
                raise UsageError(f"input {info.name!r} dimension {axis} is dynamic ({info.describe()}); "
                                 f"give its size with --shapes {info.name}:<dims> for random data")
            dims.append(int(rng.integers(bound[0], bound[1] + 1)))
        return tuple(dims)

    def _chunks(self) -> Iterator[Chunk]:
        stream = {"all": 0, "calibration": 0, "heldout": 1}[self.part]
        for start in range(0, self.count, self.batch_size):
            chunk = start // self.batch_size
            shapes = {info.name: self._sample_shape(info, chunk) for info in self.inputs}
            rows = min(self.batch_size, self.count - start)
            feed = {}
            for info in self.inputs:
                if info.name in self.whole:  # one value for the whole batch
                    rng = np.random.default_rng([self.seed, stream, start, 1 << 21])
                    feed[info.name] = self._draw(info, shapes[info.name], self.ranges.get(info.name), rng)
                    continue
                samples = [self._draw(info, shapes[info.name], self.ranges.get(info.name),
                                      np.random.default_rng([self.seed, stream, start + i]))
                           for i in range(rows)]
                feed[info.name] = np.stack(samples)
            yield Chunk(feed, None, f"random batch {chunk}")

    @staticmethod
    def _draw(info: TensorInfo, shape: tuple[int, ...], bounds: ValueRange | None,
              rng: np.random.Generator) -> np.ndarray:
        dtype = np.dtype(info.dtype)
        if dtype.kind == "f":
            if bounds is not None:
                return rng.uniform(bounds[0], bounds[1], shape).astype(dtype)
            return rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        if dtype.kind in "iu":
            assert bounds is not None  # checked in __init__
            return rng.integers(int(bounds[0]), int(bounds[1]), shape, endpoint=True).astype(dtype)
        if dtype.kind == "b":
            return rng.integers(0, 2, shape).astype(bool)
        raise UsageError(f"random data for input {info.describe()} is not supported")
