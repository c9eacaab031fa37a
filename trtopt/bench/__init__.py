"""Benchmarks: latency, throughput, memory and accuracy vs a baseline, with reports and history.

``benchmark(targets, baseline=...)`` returns the report dict (schema in ``report.schema.json``);
``trtopt bench`` adds reports, the SQLite history and regression checks on top.
"""
from __future__ import annotations

from trtopt.bench.driver import BenchConfig, benchmark

__all__ = ["BenchConfig", "benchmark"]
