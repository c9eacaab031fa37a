"""``--accuracy-budget``: limits on any accuracy metric (and on speed) that a build must meet.

Syntax: ``KEY=VALUE[,KEY=VALUE]``. A key is a metric name, optionally ``@OUTPUT`` for one output
(without it, the worst over all outputs counts):

* ``agreement``, ``cosine``, ``snr`` (dB), ``iou``: at least VALUE;
* ``max-abs-error``, ``mean-abs-error``, ``top1-drop`` (task accuracy points, needs labels): at most;
* any score a ``--metric file.py:fn`` returns (e.g. ``text_agreement=0.99``): at least;
* ``speedup``: FP32 latency / engine latency on the accuracy batches, at least VALUE
  (``speedup=1.0``: not slower than FP32).

A limit outside its metric's range (``agreement=99``, ``cosine=1.5``, ``speedup=0``) is a usage
error, exit 2, before anything runs. A metric that cannot be measured (agreement on a model
without class outputs, ``top1-drop`` without labels) misses the budget with that reason rather than passing silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trtopt.accuracy import BUILTIN_METRICS, LARGER_IS_WORSE, AccuracyReport
from trtopt.errors import UsageError

SPEEDUP = "speedup"
_UNMEASURABLE = {
    "top1-drop": "the accuracy data has no labels; use agreement= instead",
    "agreement": "no output has a class axis; see --class-axis",
    "iou": "no output is a probability map",
    SPEEDUP: "speed vs FP32 is measured only with the onnxruntime backend",
}
# Limits no build can meet (a share written as a percentage, "agreement=99") are refused before any
# calibration or search runs: (lowest, highest) allowed limit, each end inclusive.
_LIMIT_RANGES = {
    "agreement": (0.0, 1.0),
    "iou": (0.0, 1.0),
    "cosine": (-1.0, 1.0),
    "max-abs-error": (0.0, math.inf),
    "mean-abs-error": (0.0, math.inf),
}


@dataclass(frozen=True)
class BudgetItem:
    metric: str
    output: str | None
    limit: float

    @property
    def key(self) -> str:
        return self.metric if self.output is None else f"{self.metric}@{self.output}"

    def measured(self, report: AccuracyReport, speedup: float | None) -> float | None:
        """This item's metric in ``report`` (or the measured speedup); None when not measured."""
        if self.metric == SPEEDUP:
            return speedup
        if self.metric in BUILTIN_METRICS:
            return report.metric(self.metric, self.output)
        return report.user_metrics.get(self.metric)

    def miss(self, value: float | None) -> str | None:
        """Why ``value`` misses this item (None when it meets it)."""
        if value is None:
            return f"{self.key}: not measurable ({_UNMEASURABLE.get(self.metric, 'on this model and data')})"
        larger_is_worse = self.metric in LARGER_IS_WORSE
        if (value > self.limit) if larger_is_worse else not (value >= self.limit):
            return f"{self.key} {value:.4g} {'>' if larger_is_worse else '<'} budget {self.limit:g}"
        return None


@dataclass(frozen=True)
class AccuracyBudget:
    items: tuple[BudgetItem, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.items)

    @classmethod
    def parse(cls, text: str | Mapping[str, float] | None, user_metrics: bool = False) -> "AccuracyBudget":
        """Parse the flag (or a {key: value} mapping); names other than the built-ins need ``user_metrics``."""
        if not text:
            return cls()
        if isinstance(text, AccuracyBudget):
            return text
        if isinstance(text, Mapping):
            pairs = [(str(k), v) for k, v in text.items()]
        else:
            pairs = []
            for part in str(text).split(","):
                key, sep, value = part.strip().partition("=")
                if not sep:
                    raise UsageError(
                        f"--accuracy-budget {text!r}: expected METRIC[@OUTPUT]=VALUE[,...] with metrics "
                        f"{sorted(BUILTIN_METRICS | {SPEEDUP})} or a --metric score name"
                    )
                pairs.append((key.strip(), value.strip()))
        items = []
        for key, value in pairs:
            metric, _, output = key.partition("@")
            if metric not in BUILTIN_METRICS and metric != SPEEDUP and not user_metrics:
                raise UsageError(
                    f"--accuracy-budget: unknown metric {metric!r}; use {sorted(BUILTIN_METRICS | {SPEEDUP})}, "
                    f"or a score name of a --metric file.py:fn"
                )
            if output and (metric == SPEEDUP or metric == "top1-drop" or metric not in BUILTIN_METRICS):
                raise UsageError(f"--accuracy-budget {key}: only built-in per-output metrics take @OUTPUT")
            try:
                limit = float(value)
            except (TypeError, ValueError):
                raise UsageError(f"--accuracy-budget: {key}={value!r} is not a number") from None
            low, high = _LIMIT_RANGES.get(metric, (-math.inf, math.inf))
            if math.isnan(limit) or not low <= limit <= high or (metric == SPEEDUP and limit <= 0):
                expected = "a positive number" if metric == SPEEDUP else f"a number in [{low:g}, {high:g}]"
                raise UsageError(f"--accuracy-budget: {key}={value!r} can never be met; expected {expected}")
            items.append(BudgetItem(metric, output or None, limit))
        return cls(tuple(items))

    def violations(self, report: AccuracyReport, speedup: float | None = None) -> list[str]:
        """The items the report (and the measured speedup) miss."""
        problems = []
        for item in self.items:
            if item.metric not in BUILTIN_METRICS and item.metric != SPEEDUP and item.metric not in report.user_metrics:
                raise UsageError(
                    f"--accuracy-budget: no metric {item.metric!r}; the --metric functions returned "
                    f"{sorted(report.user_metrics)}"
                )
            problem = item.miss(item.measured(report, speedup))
            if problem:
                problems.append(problem)
        return problems

    def shortfall(self, report: AccuracyReport, speedup: float | None = None) -> float:
        """How far the report is from meeting the budget, summed over items relative to each limit (0: met).

        Lets a search rank candidates that all miss: "the best reached" is the smallest shortfall.
        """
        total = 0.0
        for item in self.items:
            value = item.measured(report, speedup)
            if value is None or value != value:  # not measurable, or a NaN score
                total += 1e6
                continue
            gap = (value - item.limit) if item.metric in LARGER_IS_WORSE else (item.limit - value)
            if gap > 0:
                total += min(gap / max(abs(item.limit), 1e-9), 1e6)
        return total

    def to_json(self) -> dict[str, Any]:
        return {item.key: item.limit for item in self.items}
