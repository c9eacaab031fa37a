"""From an |x| histogram to an amax: entropy (KL), percentile, MSE and max.

Entropy follows the procedure of TensorRT's legacy EntropyCalibrator2 as NVIDIA presented it
(2048 bins, 128 quantized levels, outliers folded into the last kept bin, minimum KL divergence over
the candidate clip points). The details that description leaves open are decided as follows:

* **Candidates**: ``i = 128 .. 2048`` kept bins; the clip point (amax) is the **right edge** of the
  last kept bin, ``i * width``, so the full-range candidate reproduces max |x| exactly.
* **Exact zeros are left out** of the histogram (see :mod:`trtopt.quantization.histogram`): they
  are represented exactly at any scale, so they carry no information about the clip point.
* **Groups**: the ``i`` kept bins are merged into 128 groups of ``i // 128`` consecutive bins;
  the last group also takes the remainder (``i % 128`` bins).
* **Q**: the group masses come from the kept bins *without* the folded outliers; each bin where P
  is non-zero gets ``group mass / bins of the group where P is non-zero`` (so the last kept bin
  counts as occupied when outliers were folded into it); bins where P is zero stay 0.
* **Smoothing only where needed**: the one place Q can be 0 where P is not is the last kept bin,
  when its whole group is empty but outliers were folded into it. That bin gets ``EPSILON`` = 1e-4
  counts in Q (the constant MXNet and ONNX Runtime use), and nothing else is smoothed. Without it
  any clip point inside an empty stretch of the histogram would have infinite KL, and one far
  outlier would force the full range. A candidate that keeps no values at all is skipped.
* **Ties**: the **largest** candidate within ``1e-10`` of the minimum KL wins (clip less when
  clipping buys nothing; e.g. a tensor with a single occupied bin keeps its full range).

The search is vectorized: with ``N`` the total count, ``C_i`` the kept mass and ``T_i`` the folded
tail, ``KL_i = (sum_k P_k log P_k - sum_k P_k log Q_k) / N - log N + log C_i``; the first sum is a
cumulative sum plus the last bin's term, the second a sum over 128 groups whose masses and non-empty
counts are differences of cumulative sums at the group edges: O(candidates x 128) numpy work per
tensor, no Python loop over candidates.

Percentile: the right edge of the first bin where the cumulative count (zeros included) reaches
p% of all values. MSE: the right edge ``c`` minimizing ``sum_inside H_k (c/127)^2 / 12 +
sum_outside H_k (x_k - c)^2`` with bin centres ``x_k`` (uniform rounding noise inside, clipping
error outside; zeros excluded); ties go to the largest ``c``. Max: max |x| seen.

Auto (per tensor): each candidate of :data:`AUTO_CANDIDATES` (entropy, percentiles 99.9, 99.99 and
99.999, MSE, max) proposes a clip point from the same histogram, and the one with the smallest
expected squared INT8 error of that tensor wins (:func:`expected_errors`, the MSE objective above);
ties go to the larger clip. No extra data pass. Because MSE's own search minimizes that objective
over every clip point, its proposal usually wins; the others win where they tie it, so auto never
takes a clip that is worse by this measure. An earlier variant scored candidates on the exact grid
at bin centres: that underestimates rounding error when a step spans about one bin, favoured
entropy's hard clips and lost accuracy on the PP-OCR recognizer (0.75 vs 0.90 of lines read
right), so the uniform-noise model stays.
"""

from __future__ import annotations

import numpy as np

from trtopt.errors import UsageError

NUM_LEVELS = 128
TIE_TOLERANCE = 1e-10
EPSILON = 1e-4  # Q mass (in counts) of an otherwise empty last kept bin that holds folded outliers
METHODS = ("auto", "entropy", "percentile", "max", "mse")
AUTO_PERCENTILES = (99.9, 99.99, 99.999)
AUTO_CANDIDATES = ("entropy", *(f"percentile-{p:g}" for p in AUTO_PERCENTILES), "mse", "max")
QMAX = 127


def _xlogx(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, values * np.log(np.where(values > 0, values, 1.0)), 0.0)


def _last_minimum(divergence: np.ndarray) -> int:
    """Index of the largest candidate whose value is within TIE_TOLERANCE of the minimum."""
    best = np.min(divergence)
    return int(np.flatnonzero(divergence <= best + TIE_TOLERANCE)[-1])


def entropy_divergences(hist: np.ndarray, levels: int = NUM_LEVELS) -> np.ndarray:
    """KL(P || Q) for every candidate ``i = levels .. len(hist)`` (``+inf`` for skipped candidates)."""
    hist = np.asarray(hist, dtype=np.int64)
    bins = hist.size
    if bins < levels:
        raise ValueError(f"histogram has {bins} bins, fewer than {levels} levels")
    total = int(hist.sum())
    if total <= 0:
        raise ValueError("empty histogram")
    cum = np.concatenate(([0], np.cumsum(hist)))
    cum_nonempty = np.concatenate(([0], np.cumsum(hist > 0)))
    cum_xlogx = np.concatenate(([0.0], np.cumsum(_xlogx(hist))))
    kept = np.arange(levels, bins + 1)  # candidate i: bins [0, i) kept
    tail = total - cum[kept]
    last = hist[kept - 1]
    kept_mass = cum[kept].astype(np.float64)
    # sum_k P_k log P_k: the kept bins, with the tail folded into the last one
    p_log_p = cum_xlogx[kept - 1] + _xlogx(last + tail)
    # group edges per candidate: j * (i // levels) for j < levels, and i itself
    edges = (kept // levels)[:, None] * np.arange(levels + 1)[None, :]
    edges[:, -1] = kept
    mass = np.diff(cum[edges], axis=1).astype(np.float64)
    occupied = np.diff(cum_nonempty[edges], axis=1)
    folded = (last == 0) & (tail > 0)  # the last kept bin is occupied in P only through outliers
    occupied[:, -1] += folded
    with np.errstate(divide="ignore", invalid="ignore"):
        per_bin = np.where(mass > 0, mass / np.maximum(occupied, 1), 1.0)
        p_log_q = np.sum(np.where(mass > 0, mass * np.log(per_bin), 0.0), axis=1)
        q_last = np.where(mass[:, -1] > 0, per_bin[:, -1], EPSILON)
        p_log_q += np.where(tail > 0, tail * np.log(q_last), 0.0)
        q_total = kept_mass + np.where(folded & (mass[:, -1] == 0), EPSILON, 0.0)
        divergence = (p_log_p - p_log_q) / total - np.log(total) + np.log(q_total)
    return np.where((kept_mass > 0) & np.isfinite(divergence), divergence, np.inf)


def entropy_bins(hist: np.ndarray, levels: int = NUM_LEVELS) -> int:
    """Number of kept bins chosen by the entropy search (amax = that many bin widths)."""
    return levels + _last_minimum(entropy_divergences(hist, levels))


def percentile_bins(hist: np.ndarray, percentile: float) -> int:
    """Kept bins so that at least ``percentile``% of the counted values are inside."""
    if not 0 < percentile <= 100:
        raise UsageError(f"--percentile must be in (0, 100], got {percentile}")
    cum = np.cumsum(np.asarray(hist, dtype=np.int64))
    target = cum[-1] * (percentile / 100.0)
    return int(np.searchsorted(cum, target, side="left")) + 1


def expected_errors(hist: np.ndarray) -> np.ndarray:
    """Expected squared INT8 error per value (in bin widths^2) for every clip ``i = 1 .. bins`` kept bins."""
    hist = np.asarray(hist, dtype=np.float64)
    bins = hist.size
    centres = np.arange(bins) + 0.5  # in units of the bin width
    clip = np.arange(1, bins + 1, dtype=np.float64)  # candidate i keeps bins [0, i)
    inside = np.cumsum(hist)

    def suffix(values: np.ndarray) -> np.ndarray:  # sums over bins k >= i
        return np.concatenate((np.cumsum(values[::-1])[::-1][1:], [0.0]))

    out_n, out_x, out_xx = suffix(hist), suffix(hist * centres), suffix(hist * centres**2)
    rounding = inside * (clip / QMAX) ** 2 / 12.0
    clipping = out_xx - 2 * clip * out_x + clip**2 * out_n
    return (rounding + clipping) / max(hist.sum(), 1.0)


def mse_bins(hist: np.ndarray) -> int:
    """Kept bins minimizing the expected squared INT8 error (see the module docstring)."""
    return _last_minimum(expected_errors(hist)) + 1


def auto_bins(counts: np.ndarray, nonzero: np.ndarray) -> tuple[int, str]:
    """Per-tensor choice: (kept bins, winning candidate name) by :func:`expected_errors`.

    ``counts`` is the full |x| histogram (percentiles use it), ``nonzero`` the same without exact
    zeros (entropy, MSE and the error use it: zeros quantize exactly).
    """
    if nonzero.sum() <= 0:
        return counts.size, "max"
    errors = expected_errors(nonzero)
    proposals = {"entropy": entropy_bins(nonzero), "mse": _last_minimum(errors) + 1, "max": counts.size}
    for p in AUTO_PERCENTILES:
        proposals[f"percentile-{p:g}"] = percentile_bins(counts, p)
    best_name, best_kept = "max", counts.size
    for name in AUTO_CANDIDATES:
        kept = proposals[name]
        error, best = errors[kept - 1], errors[best_kept - 1]
        if error < best - TIE_TOLERANCE or (abs(error - best) <= TIE_TOLERANCE and kept > best_kept):
            best_name, best_kept = name, kept
    return best_kept, best_name
