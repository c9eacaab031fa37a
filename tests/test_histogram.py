"""The vectorized calibrators against slow, obviously-correct references, and histogram binning."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from trtopt.quantization.calibrators import (EPSILON, NUM_LEVELS, TIE_TOLERANCE, entropy_bins, entropy_divergences,
                                              mse_bins, percentile_bins)
from trtopt.quantization.histogram import AbsHistogram, RangeStats


def reference_divergences(hist: np.ndarray, levels: int = NUM_LEVELS) -> np.ndarray:
    """KL(P||Q) per candidate, built literally as the module docstring describes (loops, no tricks)."""
    result = []
    for kept in range(levels, len(hist) + 1):
        if hist[:kept].sum() == 0:
            result.append(np.inf)  # keeps no values: skipped
            continue
        p = hist[:kept].astype(np.float64)
        p[kept - 1] += hist[kept:].sum()
        q = np.zeros(kept)
        width = kept // levels
        for group in range(levels):
            start = group * width
            stop = kept if group == levels - 1 else start + width
            group_mass = hist[start:stop].sum()
            occupied = np.count_nonzero(p[start:stop])
            for k in range(start, stop):
                if p[k] > 0:
                    q[k] = group_mass / occupied
        if q[kept - 1] == 0 and p[kept - 1] > 0:
            q[kept - 1] = EPSILON
        p, q = p / p.sum(), q / q.sum()
        result.append(sum(pk * np.log(pk / qk) for pk, qk in zip(p, q) if pk > 0))
    return np.array(result)


def reference_choice(divergences: np.ndarray) -> int:
    best = min(divergences)
    return NUM_LEVELS + max(i for i, d in enumerate(divergences) if d <= best + TIE_TOLERANCE)


def _histograms(bins: int) -> st.SearchStrategy[np.ndarray]:
    dense = st.lists(st.integers(0, 10**6), min_size=bins, max_size=bins)
    sparse = st.dictionaries(st.integers(0, bins - 1), st.integers(1, 10**9), min_size=1, max_size=12).map(
        lambda d: [d.get(i, 0) for i in range(bins)])
    decaying = st.tuples(st.floats(1, 10**6), st.floats(5, 2 * bins), st.integers(0, 2**31)).map(
        lambda t: np.random.default_rng(t[2]).poisson(t[0] * np.exp(-np.arange(bins) / t[1])).tolist())
    return st.one_of(dense, sparse, decaying).map(lambda h: np.array(h, dtype=np.int64)).filter(lambda h: h.sum() > 0)


@settings(max_examples=40, deadline=None)
@given(_histograms(320))
def test_fast_entropy_picks_exactly_the_reference_bin(hist: np.ndarray) -> None:
    # 320 bins (2.5 x 128 levels) keep the slow reference quick while exercising uneven groups
    fast, slow = entropy_divergences(hist), reference_divergences(hist)
    np.testing.assert_array_equal(np.isfinite(fast), np.isfinite(slow))
    np.testing.assert_allclose(fast[np.isfinite(fast)], slow[np.isfinite(slow)], rtol=1e-9, atol=1e-11)
    assert entropy_bins(hist) == reference_choice(slow)


def test_fast_entropy_matches_reference_on_full_2048_bin_histograms() -> None:
    rng = np.random.default_rng(7)
    for scale in (50.0, 400.0):
        values = np.abs(rng.standard_t(3, 200_000)) if scale == 50.0 else rng.exponential(1.0, 200_000)
        hist = np.histogram(values, 2048, (0, values.max()))[0]
        assert entropy_bins(hist) == reference_choice(reference_divergences(hist))


def test_entropy_clips_heavy_tail_but_keeps_single_bin_range() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([np.abs(rng.normal(0, 1, 100_000)), [100.0]])  # one far outlier
    hist = np.histogram(values, 2048, (0, 100.0))[0]
    amax = entropy_bins(hist) * 100 / 2048
    assert values[:-1].max() < amax <= 100 * 256 / 2048  # the outlier is clipped, the bulk kept
    single = np.zeros(2048, np.int64)
    single[2047] = 10  # constant tensor: every value in the last bin
    assert entropy_bins(single) == 2048


def test_percentile_and_mse_against_direct_computation() -> None:
    rng = np.random.default_rng(1)
    hist = rng.poisson(1000 * np.exp(-np.arange(2048) / 150.0))
    cum = np.cumsum(hist)
    kept = percentile_bins(hist, 99.0)
    assert cum[kept - 1] >= 0.99 * cum[-1] > cum[kept - 2]
    centres = np.arange(2048) + 0.5
    errors = []
    for i in range(1, 2049):
        inside = hist[:i].sum() * (i / 127) ** 2 / 12
        outside = (hist[i:] * (centres[i:] - i) ** 2).sum()
        errors.append((inside + outside) / hist.sum())
    assert mse_bins(hist) == max(i for i, e in enumerate(errors, 1) if e <= min(errors) + TIE_TOLERANCE)


def test_histogram_is_independent_of_batch_split_and_order() -> None:
    rng = np.random.default_rng(3)
    values = rng.standard_normal(10_000).astype(np.float32) * 3
    values[::7] = 0
    whole = AbsHistogram(float(np.abs(values).max()))
    whole.update(values)
    pieces = AbsHistogram(float(np.abs(values).max()))
    for chunk in np.array_split(rng.permutation(values), 13):
        pieces.update(chunk)
    np.testing.assert_array_equal(whole.counts, pieces.counts)
    assert whole.zeros == pieces.zeros == 10_000 // 7 + 1
    assert whole.counts[-1] >= 1 and whole.total == 10_000  # max |x| lands in the last bin


def test_range_stats_merge_and_nonfinite_skip() -> None:
    stats = RangeStats()
    stats.update(np.array([1.0, -4.0], np.float16), False, "t")
    stats.update(np.array([np.nan, 2.0, np.inf], np.float32), True, "t")
    assert (stats.min, stats.max, stats.absmax, stats.count, stats.nonfinite) == (-4.0, 2.0, 4.0, 5, 2)
