"""Regression detection between two benchmark reports.

Timing metrics are compared on each run's *best window* (lowest window median latency, highest
window throughput): other processes on a shared machine only ever slow a window down, so the best
window is what the target can do, while a real regression slows every window. A timing metric is
flagged only when it moved the wrong way by more than ``threshold`` (as a ratio of the worse to
the better value, so 0.15 means 15% slower whether latency or throughput is measured) AND by more than
``spread_k`` times the combined measured spread of both runs (the standard deviation of the
per-window values: how much the number wandered *within* each run). Server runs are compared on
achieved QPS only; their latencies include wake-up and queueing noise. Accuracy metrics are
deterministic for a fixed input pool, so they use absolute floors; memory and engine size use a
relative change with an absolute floor (allocator noise is a few MiB).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DEFAULT_THRESHOLD = 0.15
DEFAULT_SPREAD_K = 3.0
_ACCURACY_FLOORS = {"top1_agreement": 0.01, "candidate_accuracy": 0.01, "task_accuracy": 0.01, "snr_db": 3.0}
_MEMORY_FLOOR_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Metric:
    value: float
    spread: float
    higher_is_better: bool
    kind: str  # timing | accuracy | memory


def _timed(prefix: str, result: dict[str, Any], out: dict[str, Metric]) -> None:
    out[f"{prefix}/best_window_median_ms"] = Metric(
        result["best_window_median_ms"], result["median_spread_ms"], False, "timing"
    )
    out[f"{prefix}/best_window_throughput_sps"] = Metric(
        result["best_window_throughput_sps"], result["throughput_spread"], True, "timing"
    )


def extract_metrics(report: dict[str, Any]) -> dict[str, Metric]:
    """The comparable numbers of a report, keyed ``target/scenario[@batch]/metric``."""
    metrics: dict[str, Metric] = {}
    for target in report["targets"]:
        name = target["name"]
        found = target.get("scenarios", {})
        if "single_stream" in found:
            _timed(f"{name}/single_stream", found["single_stream"], metrics)
        for batch in found.get("offline", {}).get("batches", []):
            _timed(f"{name}/offline@{batch['batch_size']}", batch, metrics)
        if "concurrency" in found:
            _timed(f"{name}/concurrency", found["concurrency"], metrics)
        if "server" in found:
            metrics[f"{name}/server/achieved_qps"] = Metric(found["server"]["achieved_qps"], 0.0, True, "timing")
        for key, value in (target.get("accuracy") or {}).items():
            if key in _ACCURACY_FLOORS and value is not None:
                metrics[f"{name}/accuracy/{key}"] = Metric(float(value), 0.0, True, "accuracy")
        if target.get("task_accuracy") is not None:
            metrics[f"{name}/accuracy/task_accuracy"] = Metric(target["task_accuracy"], 0.0, True, "accuracy")
        delta = (target.get("memory") or {}).get("host_rss_delta_bytes")
        if delta is not None:
            metrics[f"{name}/memory/host_rss_delta_bytes"] = Metric(float(delta), 0.0, False, "memory")
        if target.get("engine_size_bytes") is not None:
            metrics[f"{name}/engine/size_bytes"] = Metric(float(target["engine_size_bytes"]), 0.0, False, "memory")
    return metrics


def _judge(name: str, old: Metric, new: Metric, threshold: float, spread_k: float) -> str:
    worse = (new.value < old.value) if new.higher_is_better else (new.value > old.value)
    diff = abs(new.value - old.value)
    if old.kind == "accuracy":
        moved = diff > _ACCURACY_FLOORS.get(name, 0.01)
    elif old.kind == "memory":
        moved = diff > max(threshold * abs(old.value), _MEMORY_FLOOR_BYTES)
    else:
        # ratio of the worse to the better value: a threshold of 1.0 means "twice as slow" for a
        # latency and for a throughput alike
        low, high = sorted((abs(old.value), abs(new.value)))
        relative = high / low - 1.0 if low > 0 else math.inf
        moved = relative > threshold and diff > spread_k * math.hypot(old.spread, new.spread)
    if not moved:
        return "unchanged"
    return "regressed" if worse else "improved"


def compare_reports(old: dict[str, Any], new: dict[str, Any], threshold: float = DEFAULT_THRESHOLD,
                    spread_k: float = DEFAULT_SPREAD_K) -> dict[str, Any]:
    """The comparison block stored in the new report (see report.schema.json)."""
    before, after = extract_metrics(old), extract_metrics(new)
    rows = []
    for key in sorted(set(before) & set(after)):
        a, b = before[key], after[key]
        target, _, metric = key.partition("/")
        status = _judge(metric.rsplit("/", 1)[-1], a, b, threshold, spread_k)
        rows.append({"key": key, "target": target, "metric": metric, "old": a.value, "new": b.value,
                     "change": (b.value - a.value) / a.value if a.value else None,
                     "spread": math.hypot(a.spread, b.spread), "status": status})
    warnings = []
    old_targets = {t["name"] for t in old["targets"]}
    new_targets = {t["name"] for t in new["targets"]}
    if old_targets.isdisjoint(new_targets):
        warnings.append(f"no target names in common with run {old.get('run_id')}: nothing was compared")
    for field in ("threads", "samples", "seed", "data"):
        if old["config"].get(field) != new["config"].get(field):
            warnings.append(
                f"config {field} differs: {old['config'].get(field)!r} then, {new['config'].get(field)!r} now"
            )
    if old["environment"].get("hostname") != new["environment"].get("hostname"):
        warnings.append("the runs come from different hosts")
    return {
        "against_run_id": old.get("run_id"),
        "threshold": threshold,
        "spread_k": spread_k,
        "regressions": sum(r["status"] == "regressed" for r in rows),
        "improvements": sum(r["status"] == "improved" for r in rows),
        "metrics": rows,
        "missing_targets": sorted(old_targets - new_targets),
        "warnings": warnings,
    }


def regression_summary(comparison: dict[str, Any]) -> str:
    """One line for RegressionDetected: which metrics regressed, by how much."""
    parts = [
        f"{r['key']} {r['old']:.4g} -> {r['new']:.4g}" for r in comparison["metrics"] if r["status"] == "regressed"
    ]
    shown = "; ".join(parts[:5]) + (f"; and {len(parts) - 5} more" if len(parts) > 5 else "")
    return f"{len(parts)} metric(s) regressed against run {comparison['against_run_id']}: {shown}"
