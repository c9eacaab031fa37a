"""Scenario mechanics on real ONNX Runtime sessions: seeded server arrivals, achieved QPS, stability."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import make_residual_convnet
from trtopt.bench import benchmark
from trtopt.bench.scenarios import poisson_arrivals
from trtopt.bench.stability import StabilityPolicy, Window, repeat_until_stable
from trtopt.bench.stats import LatencyStats


def test_poisson_arrivals_are_seeded_and_poisson_like() -> None:
    first, again = poisson_arrivals(200, 10, seed=7), poisson_arrivals(200, 10, seed=7)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, poisson_arrivals(200, 10, seed=8))
    assert first.size == 2000 and 0 <= first[0] and first[-1] <= 10
    gaps = np.diff(first)
    # exponential inter-arrival gaps: mean 1/qps and coefficient of variation ~1
    assert gaps.mean() == pytest.approx(1 / 200, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.1)


def test_server_repeats_arrivals_and_meets_target_qps(tmp_path: Path) -> None:
    model = make_residual_convnet(tmp_path / "tiny.onnx")
    runs = [benchmark([str(model)], scenarios=("server",), qps=50, duration_s=2.0, seed=3, threads=1,
                      samples=16, warmup_s=0.05)["targets"][0]["scenarios"]["server"] for _ in range(2)]
    assert runs[0]["arrival_schedule_sha256"] == runs[1]["arrival_schedule_sha256"]
    for server in runs:
        assert server["issued"] == server["completed"] == 100
        # a tiny model at 50 QPS keeps up: achieved within 5% of the target
        assert server["achieved_qps"] == pytest.approx(50, rel=0.05)
        assert server["latency_ms"]["median"] >= server["service_ms"]["median"]  # latency includes queueing


def test_stability_stops_when_windows_agree_and_at_the_time_bound() -> None:
    steady = repeat_until_stable(lambda s: Window([0.001] * 10, 10, s), StabilityPolicy(warmup_s=0, max_time_s=10))
    assert steady.stop_reason == "stable" and len(steady.window_medians_s) == 3
    drifting = iter(range(1, 10_000))
    drift = repeat_until_stable(lambda s: Window([0.001 * next(drifting)] * 10, 10, s),
                                StabilityPolicy(warmup_s=0, max_time_s=0.5, tolerance=0.01))
    assert drift.stop_reason == "time_bound" and drift.elapsed_s >= 0.5


def test_latency_stats_percentiles_are_ordered() -> None:
    samples = np.random.default_rng(0).exponential(0.002, 5000)
    stats = LatencyStats.from_seconds(samples)
    assert stats.count == 5000
    assert stats.min <= stats.median <= stats.p90 <= stats.p95 <= stats.p99 <= stats.max
    assert stats.median == pytest.approx(np.median(samples) * 1e3)
    assert 0 < stats.spread < stats.stdev  # MAD-based spread ignores the exponential tail
