"""Repeat measurement windows until the median latency is steady, or a time bound is hit.

A scenario hands in ``run_window(seconds) -> Window``; this module knows nothing about models or
threads. After a discarded warm-up, windows run back to back. The run is *stable* when the medians
of the last ``windows_needed`` windows lie within ``tolerance`` of each other (relative spread,
(max - min) / median). Otherwise it stops at ``max_time_s`` and says so, so a report never passes
off a drifting number as a settled one.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STABLE = "stable"
TIME_BOUND = "time_bound"


@dataclass
class Window:
    """One measurement window: per-query latencies, samples processed, wall time."""

    latencies_s: list[float]
    samples: int
    elapsed_s: float


@dataclass(frozen=True)
class StabilityPolicy:
    warmup_s: float = 0.2
    max_time_s: float = 5.0
    tolerance: float = 0.05
    windows_needed: int = 3
    min_window_s: float = 0.05

    @property
    def window_s(self) -> float:
        """About 20 windows fit in the time bound, so a stable run ends well before it."""
        return max(self.min_window_s, self.max_time_s / 20.0)


@dataclass
class Measurement:
    latencies_s: np.ndarray
    samples: int
    elapsed_s: float
    stop_reason: str
    median_variation: float = 0.0  # relative range of the last windows' medians
    window_medians_s: list[float] = field(default_factory=list)
    window_throughputs: list[float] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        """Samples per second over all measured windows (warm-up excluded)."""
        return self.samples / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def stability_json(self, policy: StabilityPolicy) -> dict[str, Any]:
        return {
            "stop_reason": self.stop_reason,
            "windows": len(self.window_medians_s),
            "median_variation": self.median_variation,
            "tolerance": policy.tolerance,
            "measured_s": self.elapsed_s,
        }


def relative_range(values: list[float]) -> float:
    if not values:
        return 0.0
    middle = float(np.median(values))
    return (max(values) - min(values)) / middle if middle > 0 else 0.0


def repeat_until_stable(run_window: Callable[[float], Window], policy: StabilityPolicy) -> Measurement:
    if policy.warmup_s > 0:
        run_window(policy.warmup_s)
    latencies: list[float] = []
    medians: list[float] = []
    throughputs: list[float] = []
    samples = 0
    elapsed = 0.0
    stop_reason = TIME_BOUND
    while True:
        window = run_window(policy.window_s)
        latencies.extend(window.latencies_s)
        samples += window.samples
        elapsed += window.elapsed_s
        medians.append(float(np.median(window.latencies_s)))
        throughputs.append(window.samples / window.elapsed_s if window.elapsed_s > 0 else 0.0)
        if (
            len(medians) >= policy.windows_needed
            and relative_range(medians[-policy.windows_needed :]) <= policy.tolerance
        ):
            stop_reason = STABLE
            break
        if elapsed >= policy.max_time_s:
            break
    variation = relative_range(medians[-policy.windows_needed:])
    return Measurement(np.asarray(latencies), samples, elapsed, stop_reason, variation, medians, throughputs)
