"""Latency statistics quoted by every scenario.

Percentiles use numpy's default linear interpolation, the convention trtexec and Perf Analyzer
users read. ``spread`` is a robust standard deviation (1.4826 x median absolute deviation): on a
shared machine a few preempted iterations inflate the plain stdev, and regression thresholds built
on it would then never fire.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

_MAD_TO_SIGMA = 1.4826


def robust_spread(values: Sequence[float] | np.ndarray) -> float:
    """1.4826 x MAD: equals the standard deviation for normal data, ignores outliers."""
    array = np.asarray(values, dtype=np.float64)
    if array.size < 2:
        return 0.0
    return float(_MAD_TO_SIGMA * np.median(np.abs(array - np.median(array))))


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-query latencies, in milliseconds."""

    count: int
    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    max: float
    stdev: float
    spread: float

    @classmethod
    def from_seconds(cls, latencies_s: Sequence[float] | np.ndarray) -> "LatencyStats":
        ms = np.asarray(latencies_s, dtype=np.float64) * 1e3
        if ms.size == 0:
            raise ValueError("no latencies were measured")
        p90, p95, p99 = np.percentile(ms, [90, 95, 99])
        return cls(
            count=int(ms.size), min=float(ms.min()), mean=float(ms.mean()), median=float(np.median(ms)),
            p90=float(p90), p95=float(p95), p99=float(p99), max=float(ms.max()),
            stdev=float(ms.std(ddof=1)) if ms.size > 1 else 0.0, spread=robust_spread(ms),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def thin_samples(latencies_s: Sequence[float] | np.ndarray, limit: int = 2000) -> list[float]:
    """At most `limit` latencies in ms, evenly picked from the sorted samples.

    Keeps the JSON report small while preserving the distribution the HTML report plots.
    """
    ms = np.sort(np.asarray(latencies_s, dtype=np.float64) * 1e3)
    if ms.size > limit:
        ms = ms[np.linspace(0, ms.size - 1, limit).round().astype(int)]
    return [round(float(v), 5) for v in ms]
