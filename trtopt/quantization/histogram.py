"""Per-tensor statistics collected in one pass: ranges, plus an |x| histogram on a range-free grid.

What the calibrators consume is an :class:`AbsHistogram`: ``NUM_BINS`` = 2048 bins of |x| over
``[0, amax]`` with ``amax = max |x|`` over the whole calibration set. Bin ``k`` covers
``[k * w, (k + 1) * w)`` with ``w = amax / bins``; ``|x| == amax`` lands in the last bin. Exact
zeros are counted separately as well: they quantize to exactly 0 at any scale, so the entropy and
MSE searches leave them out (after a ReLU they would otherwise dominate bin 0).

Why one pass, and how (the decision): amax is only known at the end, so the counting grid cannot
depend on it. Growing a 2048-bin range while counting makes late outliers squeeze early data into
few bins and ties the result to batch order; a first pass for the ranges costs a whole second
forward pass. Instead each tensor keeps a :class:`PowerOfTwoHistogram`: ``FINE_BINS`` bins of
|x| over ``(0, top]``, where ``top`` is the smallest power of two ``>= max |x|`` seen so far, plus
one bin for exact zeros. Fine bin ``k >= 1`` covers ``((k - 1) f, k f]`` with ``f = top /
FINE_BINS``, a power of two, so the index ``ceil(|x| / f)`` is computed without rounding (a
multiplication by a power of two is exact in floating point). When a batch raises ``top`` by
``2**d``, every ``2**d`` consecutive fine bins merge into one, which is exactly the bin the values
would have had on the new grid (``ceil(ceil(y) / n) == ceil(y / n)``). So the fine histogram is
a function of the set of values only: the same for any batch order and batch size.

The largest values of each tensor are also kept exactly, value by value: every |x| above a
threshold edge of the fine grid, the smallest edge with at most ``TAIL_SIZE`` = 4096 values above
it. Counts only grow, so that edge only moves up, and a value above the final edge was above the
edge of its own batch: the kept set is the same for any batch order and batch size.

Once the pass is over, :meth:`PowerOfTwoHistogram.rebin` turns this into the 2048-bin histogram
over ``[0, amax]``: the kept values are binned exactly as the two-pass histogram bins them; below
the threshold, the cumulative count at each 2048-bin edge is interpolated linearly inside the fine
bin that holds the edge and rounded. Error bound against the exact two-pass histogram (every value
binned over the known ``[0, amax]``): above the threshold none; below it, ``top < 2 amax``, so a
fine bin is narrower than ``2 amax / FINE_BINS = w / 4`` (``FINE_BINS = 16384``). Only values in
the fine bin that straddles an edge can land on the other side of it, so every value stays in its
exact bin or moves to a neighbour, and the cumulative count at every edge is bracketed by the exact
ones at the neighbouring edges. Consequences for the amax: ``max`` is exact (max |x| is tracked
exactly); ``percentile`` is within one bin width by the bracketing; ``mse`` and ``entropy`` pick
a minimum of an objective over the 2048 candidates. ``scripts/calibration_agreement.py`` measures
them on real models (docs/CALIBRATION.md): ``mse`` and ``auto`` within one bin on all but one of
1477 tensors, ``entropy`` on 94%; the rest are near-ties of the KL search (distant candidates
within 1% of the minimum) that any change of the histogram switches: on most models the exact
two-pass pick itself moves more often when one batch is left out of the data. The exact tail
matters because the KL search counts occupied bins: moving a single value of a sparse tail by one
bin changes Q, moving one of thousands in a dense bin barely does. An exact one-pass histogram
would have to keep every value near an edge that is only known at the end, i.e. memory growing with
the data; the two-pass alternative costs a second forward pass.

Per tensor the pass keeps ``(FINE_BINS + 1) x 4`` bytes (64 KiB) of uint32 counts (int64 once a
tensor has seen 2**32 values), at most ``2 x TAIL_SIZE`` kept float32 values (32 KiB; 4096 after
each pruning) and a few scalars, whatever the number of samples, and the 2048-bin result (16 KiB)
afterwards. A coarser grid would be smaller but moves more entropy picks: with 8192 or 4096 fine
bins (32 or 16 KiB) the one-bin bound still holds, and on the zoo MobileNetV2 the entropy agreement
dropped from 63/66 tensors to 58 and 57.

Exact zeros are the fine grid's bin 0 (``ceil(0) == 0``); a non-zero magnitude so small that
``|x| / f`` underflows to 0 (below ``2**-149`` times ``f``: a tensor whose max exceeds ~10^38
times its smallest non-zero value) is counted as a zero.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from trtopt.errors import TrtoptError

NUM_BINS = 2048
FINE_BINS = 16384
# float32 holds |x| / f exactly for any f it can represent; above this factor use float64
_FLOAT32_MAX_FACTOR = 2.0**100
# values binned at a time: the temporaries (about 16 bytes a value) stay a few MB, in cache and reused
# by the allocator, instead of fresh page-faulted buffers the size of a whole large-batch tensor
CHUNK = 1 << 19
# largest values per tensor kept exactly (4 bytes each), so the sparse tail is binned exactly
TAIL_SIZE = 4096
# counts are uint32 until the values counted could overflow one bin
_UINT32_LIMIT = np.iinfo(np.uint32).max


class NonFiniteError(TrtoptError):
    """NaN or Inf in an activation under nan_policy="error"."""


@dataclass
class RangeStats:
    """Min, max and counts of one tensor, merged over batches (order-independent)."""

    min: float = np.inf
    max: float = -np.inf
    count: int = 0
    nonfinite: int = 0

    @property
    def absmax(self) -> float:
        return float(max(abs(self.min), abs(self.max))) if self.count > self.nonfinite else 0.0

    def update(self, values: np.ndarray, skip_nonfinite: bool, where: str) -> np.ndarray:
        """Merge one batch and return its finite values (``values`` itself when all are finite).

        Raises NonFiniteError naming ``where`` unless skipping non-finite values.
        """
        if values.size == 0:
            return values
        low, high = values.min(), values.max()
        if not (np.isfinite(low) and np.isfinite(high)):  # NaN propagates through min/max; Inf shows up there
            finite_mask = np.isfinite(values)
            bad = values.size - int(np.count_nonzero(finite_mask))
            if not skip_nonfinite:
                nan = int(np.count_nonzero(np.isnan(values)))
                raise NonFiniteError(f"{where}: {nan} NaN and {bad - nan} Inf value(s); fix the model or data, "
                                     f"or pass --nan-policy skip to leave them out of the statistics")
            self.nonfinite += bad
            self.count += values.size
            values = values[finite_mask]
            if values.size:
                self.min = min(self.min, float(values.min()))
                self.max = max(self.max, float(values.max()))
            return values
        self.min = min(self.min, float(low))
        self.max = max(self.max, float(high))
        self.count += values.size
        return values


class AbsHistogram:
    """Histogram of |x| over the fixed range ``[0, range_max]`` (see the module docstring).

    :meth:`update` bins values directly, which needs the range before the first value: the exact
    definition the one-pass :meth:`PowerOfTwoHistogram.rebin` approximates.
    """

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
        """Count one batch of finite values over the known range."""
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


@dataclass
class PowerOfTwoHistogram:
    """|x| counts on the power-of-two grid of the module docstring, plus the exact largest values.

    ``tail`` holds every |x| above the threshold fine edge ``threshold * f``, which is kept at
    (or below) the smallest edge with at most ``tail_size`` values above it; :meth:`rebin` bins
    those values exactly and interpolates only below the threshold.
    """

    bins: int = FINE_BINS
    tail_size: int = TAIL_SIZE
    top: float = 0.0  # 0 until a non-zero value is seen
    abs_sum: float = 0.0
    threshold: int = 0  # fine bins above this one are also held value by value in ``tail``
    counts: np.ndarray = field(init=False)  # counts[0]: exact zeros; counts[k]: ((k - 1) f, k f]
    tail: np.ndarray = field(init=False)  # |x| of every value above threshold * f (and maybe a few below)
    _tail_parts: list[np.ndarray] = field(init=False, repr=False)
    _total: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.bins < 1 or self.bins & (self.bins - 1):
            raise ValueError(f"the fine grid needs a power-of-two number of bins, got {self.bins}")
        self.counts = np.zeros(self.bins + 1, dtype=np.uint32)
        self.tail = np.zeros(0, dtype=np.float32)
        self._tail_parts = []
        self._total = 0

    @property
    def zeros(self) -> int:
        return int(self.counts[0])

    def update(self, values: np.ndarray, absmax: float) -> None:
        """Count one batch of finite values; ``absmax`` bounds them (the running max |x| will do)."""
        if values.size == 0:
            return
        self._cover(absmax)
        self._total += values.size
        if self._total > _UINT32_LIMIT and self.counts.dtype != np.int64:
            self.counts = self.counts.astype(np.int64)
        factor = self.bins / self.top if self.top else 0.0
        dtype = np.float64 if values.dtype == np.float64 or factor > _FLOAT32_MAX_FACTOR else np.float32
        flat, scale = values.reshape(-1), dtype(factor)
        for start in range(0, flat.size, CHUNK):
            magnitudes = np.abs(flat[start:start + CHUNK], dtype=dtype)
            self.abs_sum += float(magnitudes.sum())
            np.multiply(magnitudes, scale, out=magnitudes)
            # values above the threshold edge, in fine-bin units (exact: the scale is a power of two)
            if magnitudes.max() > self.threshold:  # a max is cheaper than the comparison it usually spares
                self._tail_parts.append(magnitudes[magnitudes > self.threshold] / scale)
            np.ceil(magnitudes, out=magnitudes)
            np.add(self.counts, np.bincount(magnitudes.astype(np.int32), minlength=self.bins + 1), out=self.counts,
                   casting="unsafe")  # the total guards the uint32 range
            if self._tail_parts and sum(part.size for part in self._tail_parts) + self.tail.size > 2 * self.tail_size:
                self._prune()

    def _cover(self, absmax: float) -> None:
        """Grow ``top`` to the smallest power of two >= ``absmax``, merging bins to match."""
        if absmax <= self.top or absmax == 0:
            return
        mantissa, exponent = np.frexp(absmax)  # absmax = mantissa * 2**exponent, mantissa in [0.5, 1)
        top = float(np.ldexp(1.0, int(exponent) - (mantissa == 0.5)))
        if self.top:
            merge = int(round(top / self.top))
            fine = self.counts[1:]
            merged = np.zeros_like(fine)
            if merge >= self.bins:
                merged[0] = fine.sum()
            else:
                merged[: self.bins // merge] = fine.reshape(-1, merge).sum(axis=1)
            self.counts[1:] = merged
            # round the threshold edge up onto the coarser grid: the tail still holds every value above it
            self.threshold = -(-self.threshold // merge)
        self.top = top

    def _prune(self) -> None:
        """Raise the threshold to the smallest fine edge with at most ``tail_size`` values above it.

        Counts only grow, so that edge never moves down: every value above the final threshold was
        above the threshold of its own batch and is in the tail, whatever the batch order.
        """
        above = np.cumsum(self.counts[:0:-1], dtype=np.int64)[::-1]  # above[k - 1]: values in fine bins >= k
        self.threshold = max(self.threshold, int(np.searchsorted(-above, -self.tail_size, side="left")))
        edge = self.threshold * (self.top / self.bins)
        tail = np.concatenate([self.tail, *self._tail_parts])
        self.tail, self._tail_parts = tail[tail > edge], []

    def rebin(self, amax: float, bins: int = NUM_BINS) -> AbsHistogram:
        """The ``bins``-bin histogram over ``[0, amax]`` (see the module docstring).

        Values above the threshold edge are binned exactly, as :meth:`AbsHistogram.update` bins
        them. Below it, the cumulative count at each edge is interpolated linearly inside the fine
        bin holding the edge and rounded; the counts are its differences. Assigning whole fine bins
        instead would give every 2048-bin either ``n`` or ``n + 1`` fine bins (their widths are not
        multiples), a periodic ripple that moves the entropy search's minimum.
        """
        self._prune()
        result = AbsHistogram(amax, bins)
        result.zeros = self.zeros
        result.abs_sum = self.abs_sum
        nonzero = int(self.counts[1:].sum())
        if amax <= 0 or not self.top:
            result.counts[0] = self.zeros + nonzero
            return result
        body = self.counts[1:self.threshold + 1]
        fine_cumulative = np.concatenate(([0], np.cumsum(body, dtype=np.int64))).astype(np.float64)
        edges = np.arange(1, bins + 1) * (amax / bins) * (self.bins / self.top)  # in fine-bin units
        edges[-1] = self.bins  # everything up to amax, which is <= top, is inside the last bin
        cumulative = np.rint(np.interp(edges, np.arange(body.size + 1), fine_cumulative)).astype(np.int64)
        result.counts[:] = np.diff(cumulative, prepend=0)
        result.counts[0] += self.zeros
        exact = AbsHistogram(amax, bins)
        exact.update(self.tail)
        result.counts += exact.counts
        return result
