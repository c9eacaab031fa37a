"""Robust latency comparison of a few runnables on a shared, loaded machine (numpy-free, torch-free).

The build's speed-vs-FP32 check and the mixed-precision search both ask one question: is this
engine faster than the FP32 model on the same batch? A median of four batches timed once each
answers it badly on a machine whose load changes from second to second. :func:`compare_latency`
answers it the way that holds up under load:

* warm-up runs are excluded (first-run allocations, lazy kernel choices);
* the runnables are timed **in turn within each round**, so load drift hits them alike;
* each one's **fastest** round is its latency: other processes can only add time, never remove it,
  so the minimum is the least disturbed measurement (the median is kept too, for the verdict);
* rounds continue until ``min_rounds`` are done and ``max_seconds`` have passed (or ``max_rounds``):
  small models get many rounds, large ones a bounded cost.

:meth:`LatencyComparison.verdict` calls one runnable faster or slower than another only when the
minimum *and* the median agree and the minimum differs by more than ``clear_margin``; anything
else is "no clear difference", so a noisy machine never produces a false "slower than FP32".
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

FASTER, SLOWER, UNCLEAR = "faster", "slower", "no clear difference"


@dataclass(frozen=True)
class LatencySettings:
    """How long a comparison may take and how large a difference must be to be called."""

    warmup: int = 1
    min_rounds: int = 5
    max_rounds: int = 50
    max_seconds: float = 3.0  # after min_rounds, stop starting rounds once this much time has passed
    clear_margin: float = 0.05  # a minimum within 5% of the other's is not called faster or slower


@dataclass(frozen=True)
class LatencyComparison:
    """Per runnable: the fastest and median round in milliseconds, and how many rounds were timed."""

    fastest_ms: Mapping[str, float]
    median_ms: Mapping[str, float]
    rounds: int
    clear_margin: float

    def speedup(self, candidate: str, baseline: str) -> float:
        """baseline's fastest / candidate's fastest (above 1: the candidate is faster)."""
        return self.fastest_ms[baseline] / max(self.fastest_ms[candidate], 1e-9)

    def verdict(self, candidate: str, baseline: str) -> str:
        """FASTER or SLOWER only when the fastest and the median rounds agree by more than the margin."""
        by_min = self.speedup(candidate, baseline)
        by_median = self.median_ms[baseline] / max(self.median_ms[candidate], 1e-9)
        if by_min > 1 + self.clear_margin and by_median > 1:
            return FASTER
        if by_min < 1 / (1 + self.clear_margin) and by_median < 1:
            return SLOWER
        return UNCLEAR

    def to_json(self, candidate: str, baseline: str) -> dict[str, Any]:
        """The manifest's timing fields for ``candidate`` against ``baseline`` (FP32)."""
        verdict = self.verdict(candidate, baseline)
        return {
            "fastest_ms": round(self.fastest_ms[candidate], 6),
            "median_ms": round(self.median_ms[candidate], 6),
            "fp32_fastest_ms": round(self.fastest_ms[baseline], 6),
            "fp32_median_ms": round(self.median_ms[baseline], 6),
            "speedup": round(self.speedup(candidate, baseline), 4),
            "speed_vs_fp32": verdict,
            "slower_than_fp32": verdict == SLOWER,
            "timing_rounds": self.rounds,
        }


def compare_latency(runs: Mapping[str, Callable[[], Any]],
                    settings: LatencySettings | None = None) -> LatencyComparison:
    """Time every runnable in turn per round (see the module docstring); warm-up rounds are not counted."""
    settings = settings or LatencySettings()
    for _ in range(settings.warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    started = time.perf_counter()
    rounds = 0
    while rounds < settings.max_rounds and (
        rounds < settings.min_rounds or time.perf_counter() - started < settings.max_seconds
    ):
        for name, run in runs.items():
            tic = time.perf_counter()
            run()
            times[name].append(1000 * (time.perf_counter() - tic))
        rounds += 1
    return LatencyComparison(
        {name: min(values) for name, values in times.items()},
        {name: statistics.median(values) for name, values in times.items()},
        rounds,
        settings.clear_margin,
    )
