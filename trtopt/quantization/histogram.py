"""Per-tensor statistics collected batch by batch: a cheap range pass, then an |x| histogram.

Range strategy (why two passes): the histogram range of every tensor is fixed *before* any bin is
counted, to ``[0, max |x|]`` over the whole calibration set, found by a first pass that only keeps
min/max per tensor. Every value then falls into the same bin whatever the batch order or batch
size, so the histogram (and every amax computed from it) is independent of both; the only
difference left is ONNX Runtime's own float rounding for another batch size, which can move a value
across one bin edge. The alternative, growing the range while counting, makes late outliers squeeze
the early data into few bins and ties the result to batch order (TensorRT's documentation warns
about this). The price is a second inference pass; the ``max`` method needs only the first.

Bin ``k`` covers ``[k * w, (k + 1) * w)`` with ``w = range / bins``; ``|x| == range`` lands in the
last bin. The index is computed as ``floor(|x| * (bins / range))`` in float32, identical for a
value wherever it appears. Exact zeros are counted separately as well: they quantize to exactly 0
at any scale, so the entropy and MSE searches leave them out (after a ReLU they would otherwise
dominate bin 0 and drag the clip point down).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trtopt.errors import TrtoptError

NUM_BINS = 2048


class NonFiniteError(TrtoptError):
    """NaN or Inf in an activation under nan_policy="error"."""


@dataclass
class RangeStats:
    """First pass: min, max and counts of one tensor, merged over batches (order-independent)."""

    min: float = np.inf
    max: float = -np.inf
    count: int = 0
    nonfinite: int = 0

    @property
    def absmax(self) -> float:
        return float(max(abs(self.min), abs(self.max))) if self.count > self.nonfinite else 0.0

    def update(self, values: np.ndarray, skip_nonfinite: bool, where: str) -> None:
        """Merge one batch. Raises NonFiniteError naming ``where`` unless skipping non-finite values."""
        if values.size == 0:
            return
        low, high = values.min(), values.max()
        if not (np.isfinite(low) and np.isfinite(high)):  # NaN propagates through min/max; Inf shows up there
            bad = values.size - int(np.count_nonzero(np.isfinite(values)))
            if not skip_nonfinite:
                nan = int(np.count_nonzero(np.isnan(values)))
                raise NonFiniteError(f"{where}: {nan} NaN and {bad - nan} Inf value(s); fix the model or data, "
                                     f"or pass --nan-policy skip to leave them out of the statistics")
            self.nonfinite += bad
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                self.count += values.size
                return
            low, high = finite.min(), finite.max()
        self.min = min(self.min, float(low))
        self.max = max(self.max, float(high))
        self.count += values.size


class AbsHistogram:
    """Histogram of |x| over the fixed range ``[0, range_max]`` (see the module docstring)."""

    def __init__(self, range_max: float, bins: int = NUM_BINS) -> None:
        self.range_max = float(range_max)
        self.bins = bins
        self.counts = np.zeros(bins, dtype=np.int64)
        self.zeros = 0  # exact zeros, also counted in bin 0
        self.abs_sum = 0.0
        # float32 keeps the binning pass cheap; float64 only where bins/range overflows float32
        factor = bins / self.range_max if self.range_max > 0 else 0.0
        self._dtype = np.float32 if factor < np.finfo(np.float32).max / 2 else np.float64
        self._factor = self._dtype(factor)

    @property
    def width(self) -> float:
        return self.range_max / self.bins

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def update(self, values: np.ndarray) -> None:
        """Count one batch of finite values (the caller drops NaN/Inf under nan_policy="skip")."""
        if values.size == 0:
            return
        magnitudes = np.abs(values.reshape(-1), dtype=self._dtype)
        self.zeros += magnitudes.size - int(np.count_nonzero(magnitudes))
        self.abs_sum += float(magnitudes.sum(dtype=np.float64 if self._dtype == np.float64 else None))
        if self.range_max == 0:
            self.counts[0] += magnitudes.size
            return
        np.multiply(magnitudes, self._factor, out=magnitudes)
        # |x| == range_max (or above it, if a loader is not repeatable) belongs to the last bin
        np.minimum(magnitudes, self.bins - 1, out=magnitudes)
        self.counts += np.bincount(magnitudes.astype(np.intp), minlength=self.bins)

    def nonzero_counts(self) -> np.ndarray:
        """The histogram without exact zeros: what the entropy and MSE searches look at."""
        counts = self.counts.copy()
        counts[0] -= self.zeros
        return counts
